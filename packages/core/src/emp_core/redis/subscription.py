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

Channels in several slots (a hub over queues on several primaries, a worker serving such
queues): one ``ClusterPubSub`` reading several nodes can only visit them in turn, waiting on
each, which delayed a message on another node by up to 20 ms per node. Here each slot's channels
get a pubsub of their own (one node at a time) and a reader task that hands its messages to the
caller at once; the price is a connection per slot rather than per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from emp_core.redis.replies import text
from emp_core.redis.tasks import cancel_until_done

logger = logging.getLogger(__name__)

Message = dict[str, Any]

# How long one read waits for a message (seconds): only how often an idle listener loops.
READ_S = 5.0
# While a slot's channels move to a new owner its pubsub may hold two nodes for a moment, and
# redis-py then visits them in turn: the wait per node is this short.
_ROUND_ROBIN_S = 0.02
# How long closing waits for the reader tasks (see ``emp_core.redis.tasks``).
_CLOSE_S = 2.0


class ShardSubscription:
    """Sharded subscription to ``channels`` (any slots: on a cluster, any nodes)."""

    def __init__(self, redis: Redis | RedisCluster, channels: Iterable[str]) -> None:
        self.redis = redis
        self.channels = list(dict.fromkeys(channels))
        self._parts = [_SlotPart(redis, group) for group in _by_slot(redis, self.channels)]
        # Several parts: each has a reader task that puts what it reads (a message, or the
        # error that ended a read) here, and waits for ``get`` to be called again after an error.
        self._inbox: asyncio.Queue[Message | BaseException] = asyncio.Queue()
        self._readers: list[asyncio.Task[None]] = []
        self._read_again: list[asyncio.Event] = []

    async def open(self, confirm_within: float = 10.0) -> list[Message]:
        """SSUBSCRIBE and read Redis's confirmation of every channel: once this returns, every
        later SPUBLISH on them reaches this process. Returns messages that came in meanwhile."""
        if isinstance(self.redis, RedisCluster):
            await self.redis.initialize()  # the slot map, to find each channel's node
        early: list[Message] = []
        async with asyncio.timeout(confirm_within):
            for part in self._parts:
                early += await part.open(confirm_within)
        if len(self._parts) > 1:
            for part in self._parts:
                again = asyncio.Event()
                self._read_again.append(again)
                self._readers.append(
                    asyncio.create_task(self._relay(part, again), name="emp-subscription")
                )
        return early

    async def get(self, seconds: float = READ_S) -> Message | None:
        """The next message, or None after about ``seconds``: an ``smessage``, or an
        ``ssubscribe`` confirmation when redis-py subscribed again (after a reconnect, or on a
        slot's new owner), meaning messages may have been missed. A lost connection raises
        ``RedisError``/``OSError`` (on a cluster, after asking for a fresh slot map); reading
        again reconnects and subscribes again."""
        try:
            if not self._readers:  # one part: read it here, without a hop through a task
                return await self._parts[0].read(seconds)
            return await self._next(seconds)
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
        await cancel_until_done(self._readers, within=_CLOSE_S)
        self._readers.clear()
        for part in self._parts:
            await part.aclose()

    async def __aenter__(self) -> ShardSubscription:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _next(self, seconds: float) -> Message | None:
        for again in self._read_again:  # a caller reading again after an error: reconnect
            again.set()
        try:
            async with asyncio.timeout(seconds):
                item = await self._inbox.get()
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def _relay(self, part: _SlotPart, again: asyncio.Event) -> None:
        """Read one part for ever. After an error, wait until the caller reads again: a lost
        connection is retried at the caller's pace, as with one part."""
        while True:
            try:
                message = await part.read(READ_S)
            except Exception as exc:
                again.clear()
                self._inbox.put_nowait(exc)
                await again.wait()
                continue
            if message is not None:
                self._inbox.put_nowait(message)

    async def _refresh_slots(self) -> None:
        """On a cluster, re-read the slot map: ``ClusterPubSub`` hears of it and moves each
        channel whose owner changed (a failover promoted a replica)."""
        if not isinstance(self.redis, RedisCluster):
            return
        try:
            await self.redis.nodes_manager.initialize()
        except (RedisError, OSError) as exc:
            logger.debug("slot map not refreshed after a lost subscription: %s", exc)


class _SlotPart:
    """The channels of one slot (on one node: all of them) on one pubsub."""

    def __init__(self, redis: Redis | RedisCluster, channels: list[str]) -> None:
        self.channels = channels
        self.pubsub: Any = redis.pubsub()

    async def open(self, read_s: float) -> list[Message]:
        await self.pubsub.ssubscribe(*self.channels)
        pending = set(self.channels)
        early: list[Message] = []
        while pending:
            message = await self.read(read_s)
            if message is None:
                continue
            if message["type"] == "ssubscribe":
                pending.discard(text(message["channel"]))
            else:
                early.append(message)
        return early

    async def read(self, seconds: float) -> Message | None:
        if not isinstance(self.pubsub, ClusterPubSub):
            return cast("Message | None", await self.pubsub.get_message(timeout=seconds))
        nodes = len(self.pubsub.node_pubsub_mapping)
        if nodes == 0:
            # Between a node's connection being dropped and the channel's move to its new owner.
            await asyncio.sleep(min(seconds, 0.1))
            return None
        wait = seconds if nodes == 1 else min(seconds, _ROUND_ROBIN_S)
        return await self.pubsub.get_sharded_message(timeout=wait)

    async def aclose(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()


def _by_slot(redis: Redis | RedisCluster, channels: list[str]) -> list[list[str]]:
    """The channels grouped by hash slot on a cluster (each group on one node at any time); one
    group on a single node."""
    if not isinstance(redis, RedisCluster) or not channels:
        return [channels]
    groups: dict[int, list[str]] = {}
    for channel in channels:
        groups.setdefault(key_slot(channel.encode()), []).append(channel)
    return list(groups.values())
