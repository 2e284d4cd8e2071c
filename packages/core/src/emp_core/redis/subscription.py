"""A sharded subscription (``SSUBSCRIBE``): the one way a process listens, on both shapes.

Every channel of a queue carries the queue's hash tag (``Keys``), so it lives in the queue's slot.
In a cluster ``SPUBLISH`` keeps a message on the shard that owns that slot, where classic
``PUBLISH`` crosses the cluster bus to every node; ``SSUBSCRIBE`` connects to that shard's
primary. Redis >= 7 on one node takes the same commands, so there is one code path. Messages
arrive as ``smessage``, Redis's confirmations as ``ssubscribe``.

On a cluster redis-py's ``ClusterPubSub`` keeps one connection per node and moves a channel to
the slot's new owner, but only when the cluster client refreshes its slot map (a MOVED reply or a
lost connection on a command). A process that only listens would never notice a failover, so a
read that fails here refreshes the map itself; the move follows in redis-py's background task,
and the new owner's ``ssubscribe`` confirmation tells the caller it is listening again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.exceptions import RedisError

from emp_core.redis.replies import text

logger = logging.getLogger(__name__)

Message = dict[str, Any]

# How long one read waits for a message (seconds): only how often an idle listener loops.
READ_S = 5.0
# On a cluster, one read visits each node's connection in turn and waits on each: with channels
# on several nodes the wait per node is this short, so a message on another node waits at most
# this long per node ahead of it.
_ROUND_ROBIN_S = 0.02


class ShardSubscription:
    """Sharded subscription to ``channels`` (any slots: on a cluster, any nodes)."""

    def __init__(self, redis: Redis | RedisCluster, channels: Iterable[str]) -> None:
        self.redis = redis
        self.channels = list(dict.fromkeys(channels))
        self.pubsub: Any = redis.pubsub()

    async def open(self, confirm_within: float = 10.0) -> list[Message]:
        """SSUBSCRIBE and read Redis's confirmation of every channel: once this returns, every
        later SPUBLISH on them reaches this process. Returns messages that came in meanwhile."""
        if isinstance(self.redis, RedisCluster):
            await self.redis.initialize()  # the slot map, to find each channel's node
        await self.pubsub.ssubscribe(*self.channels)
        pending = set(self.channels)
        early: list[Message] = []
        async with asyncio.timeout(confirm_within):
            while pending:
                message = await self._read(confirm_within)
                if message is None:
                    continue
                if message["type"] == "ssubscribe":
                    pending.discard(text(message["channel"]))
                else:
                    early.append(message)
        return early

    async def get(self, seconds: float = READ_S) -> Message | None:
        """The next message, or None after about ``seconds``: an ``smessage``, or an
        ``ssubscribe`` confirmation when redis-py subscribed again (after a reconnect, or on a
        slot's new owner), meaning messages may have been missed. A lost connection raises
        ``RedisError``/``OSError`` (on a cluster, after asking for a fresh slot map); reading
        again reconnects and subscribes again."""
        try:
            return await self._read(seconds)
        except (RedisError, OSError):
            await self._refresh_slots()
            raise

    async def listen(self) -> AsyncIterator[Message]:
        """Every ``smessage`` and later ``ssubscribe``, until the connection is lost (raises)."""
        while True:
            message = await self.get()
            if message is not None:
                yield message

    async def aclose(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()

    async def __aenter__(self) -> ShardSubscription:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _read(self, seconds: float) -> Message | None:
        if not isinstance(self.pubsub, ClusterPubSub):
            return cast("Message | None", await self.pubsub.get_message(timeout=seconds))
        nodes = len(self.pubsub.node_pubsub_mapping)
        if nodes == 0:
            # Between a node's connection being dropped and the channel's move to its new owner.
            await asyncio.sleep(min(seconds, 0.1))
            return None
        wait = seconds if nodes == 1 else min(seconds, _ROUND_ROBIN_S)
        return await self.pubsub.get_sharded_message(timeout=wait)

    async def _refresh_slots(self) -> None:
        """On a cluster, re-read the slot map: ``ClusterPubSub`` hears of it and moves each
        channel whose owner changed (a failover promoted a replica)."""
        if not isinstance(self.redis, RedisCluster):
            return
        try:
            await self.redis.nodes_manager.initialize()
        except (RedisError, OSError) as exc:
            logger.debug("slot map not refreshed after a lost subscription: %s", exc)
