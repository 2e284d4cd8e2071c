"""One ``ShardSubscription`` over channels on several primaries of a real cluster: each slot's
channels are read on a connection of their own, each waiting for its node alone, rather than
one reader visiting the nodes in turn (20 ms on each: a message on another node waited for it,
and an idle subscription read 50 times a second per node)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from emp_core.queue.keys import Keys
from emp_core.redis import connect
from emp_core.redis.replies import text
from emp_core.redis.subscription import Message, ShardSubscription


def _spread(client, count: int) -> list[Keys]:
    """Queues whose slots are on ``count`` different primaries."""
    found: dict[int, Keys] = {}
    for i in range(1000):
        keys = Keys("emp", f"spread{i}")
        found.setdefault(client.get_node_from_key(keys.events_channel()).port, keys)
        if len(found) == count:
            return list(found.values())
    raise AssertionError("no spread of queue names found")


def _node(client, channel: str) -> sync_redis.Redis:
    port = client.get_node_from_key(channel).port
    return sync_redis.Redis(port=port, decode_responses=True)


@pytest.fixture
async def spread(redis_cluster_url: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """A cluster client and the events channels of three queues on three primaries."""
    client = connect(redis_cluster_url)
    await client.initialize()  # type: ignore[attr-defined]
    try:
        yield client, [k.events_channel() for k in _spread(client, 3)]
    finally:
        await client.aclose()


async def _next_message(subscription: ShardSubscription) -> Message | None:
    """The next ``smessage`` (skipping confirmations), or None when a ``get`` found nothing."""
    while True:
        message = await subscription.get(2.0)
        if message is None or message["type"] == "smessage":
            return message


async def _first(subscription: ShardSubscription) -> Message:
    """The first message, as a listener reads: ``get`` again while it answers None."""
    while (message := await subscription.get(5.0)) is None:
        pass
    return message


async def test_each_slot_is_read_on_its_own_connection(redis_cluster_url: str):
    client = connect(redis_cluster_url)
    await client.initialize()  # type: ignore[attr-defined]
    queues = _spread(client, 3)
    # Two channels of the first queue share its slot, hence one connection.
    channels = [queues[0].control_channel("w1"), *(k.events_channel() for k in queues)]
    subscription = ShardSubscription(client, channels)
    try:
        await subscription.open()
        for keys in queues:
            node = _node(client, keys.events_channel())
            mine = [c for c in node.client_list(_type="pubsub") if int(c["ssub"]) > 0]
            expected = 2 if keys is queues[0] else 1
            assert [int(c["ssub"]) for c in mine] == [expected], keys.queue
    finally:
        await subscription.aclose()
        await client.aclose()


async def test_an_idle_subscription_waits_on_each_node_without_polling(
    spread: tuple[Any, list[str]], monkeypatch: pytest.MonkeyPatch
):
    client, channels = spread
    reads: list[float | None] = []
    read = PubSub.get_message

    async def counted(self: PubSub, *args: object, **kwargs: object) -> object:
        reads.append(kwargs.get("timeout"))  # type: ignore[arg-type]
        return await read(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PubSub, "get_message", counted)
    async with ShardSubscription(client, channels) as subscription:
        reads.clear()  # the confirmations' reads
        waiting = asyncio.create_task(_first(subscription))
        await asyncio.sleep(0.5)  # idle: no message anywhere
        idle_reads = len(reads)
        await client.spublish(channels[2], "late")
        message = await waiting
    # One read per node, each waiting for its node; not a read per node every 20 ms.
    assert idle_reads == len(channels), reads
    assert text(message["channel"]) == channels[2]


async def test_every_nodes_messages_come_through_in_the_order_sent(
    spread: tuple[Any, list[str]],
):
    client, channels = spread
    async with ShardSubscription(client, channels) as subscription:
        # Three rounds over the nodes in three orders, each message read before the next.
        for order in (channels, channels[::-1], channels[1:] + channels[:1]):
            for channel in order:
                await client.spublish(channel, f"to {channel}")
                message = await _next_message(subscription)
                assert message is not None, f"get returned nothing for {channel}"
                assert text(message["channel"]) == channel


async def test_a_lost_node_connection_is_raised_and_read_again(spread: tuple[Any, list[str]]):
    client, channels = spread
    async with ShardSubscription(client, channels) as subscription:
        victim = channels[1]
        assert _node(client, victim).client_kill_filter(_type="pubsub") >= 1
        try:
            message = await subscription.get(5.0)
        except RedisError:
            pass  # the lost connection, as a direct read raises it
        else:
            raise AssertionError(f"the lost connection was not raised: {message}")
        # Reading again reconnects: the killed node's channel is confirmed once more ...
        while (message := await subscription.get(5.0)) is not None:
            if message["type"] == "ssubscribe":
                assert text(message["channel"]) == victim
                break
        else:
            raise AssertionError("the killed node's channel was not subscribed again")
        # ... and every node's messages arrive again.
        for channel in channels:
            await client.spublish(channel, "again")
            message = await _next_message(subscription)
            assert message is not None, f"nothing on {channel} after the reconnect"
            assert text(message["channel"]) == channel
