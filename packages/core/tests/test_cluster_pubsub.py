"""Sharded pub/sub on a real cluster: a queue's channels live on the queue's shard (SSUBSCRIBE
there, SPUBLISH stays there, nothing crosses the cluster bus), and a Waker whose node is killed
listens again on the promoted replica by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
import redis as sync_redis
from core_factories import make_caps, make_spec
from redis.exceptions import RedisClusterException, RedisError

from emp_core.queue import Queue
from emp_core.queue.keys import Keys
from emp_core.queue.wake import Waker
from emp_core.redis import connect
from emp_core.redis.cluster import primaries
from emp_core.redis.server import LocalCluster
from emp_core.settings import QueueSettings


def _node(port: int) -> sync_redis.Redis:
    return sync_redis.Redis(port=port, decode_responses=True)


def _bus_publishes(port: int) -> int:
    """Classic PUBLISH messages this node sent over the cluster bus (to every other node)."""
    return int(_node(port).cluster("info").get("cluster_stats_messages_publish_sent", 0))


async def test_a_queues_channels_are_sharded_on_its_node(redis_cluster_url: str, capsys):
    client = connect(redis_cluster_url)
    queue = Queue(client, QueueSettings(redis_url=redis_cluster_url, queue="sharded"))
    await queue.functions.load()
    owner = client.get_node_from_key(queue.keys.pending_count())  # type: ignore[attr-defined]
    ports = [node.port for node in primaries(client)]
    try:
        async with Waker(client, queue.keys, ["simulation"], "w1") as waker:
            mine = set(waker.channels)
            for port in ports:
                shard = set(_node(port).execute_command("PUBSUB", "SHARDCHANNELS"))
                assert (mine <= shard) == (port == owner.port), port
                assert not mine & set(_node(port).pubsub_channels())  # nothing classic
            sig = waker.signal(slot=0)
            assert (await queue.claim(make_caps(worker_id="w1"), slot=0)).claimed is None
            before = {port: _bus_publishes(port) for port in ports}
            for _ in range(20):  # submitted, each one event on the events channel
                await queue.submit(make_spec())
            assert await sig.wait(5)  # the first submit woke the idle slot (control channel)
            after = {port: _bus_publishes(port) for port in ports}
        # 20 events and a wake-up: with PUBLISH each would have crossed the bus to 2 nodes.
        assert after == before
        # What the figure would be with classic PUBLISH: one bus message per other node.
        await client.publish(queue.keys.events_channel(), "classic")
        classic = sum(_bus_publishes(port) for port in ports) - sum(after.values())
        assert classic == len(ports) - 1
        with capsys.disabled():
            print(
                f"\nbus publish messages for 20 submits + 1 wake-up: {before} -> {after}; "
                f"one classic PUBLISH: {classic}"
            )
    finally:
        await client.aclose()


async def test_a_waker_listens_again_after_its_cluster_connection_is_killed(
    redis_cluster_url: str,
):
    client = connect(redis_cluster_url)
    keys = Keys("emp", "killed")
    channel = keys.control_channel("w1")
    lost: list[bool] = []
    try:
        async with Waker(
            client, keys, ["simulation"], "w1", on_lost=lambda: lost.append(True)
        ) as waker:
            sig = waker.signal(slot=0)
            owner = client.get_node_from_key(channel)  # type: ignore[attr-defined]
            assert _node(owner.port).client_kill_filter(_type="pubsub") >= 1
            assert await sig.wait(10)  # lost and subscribed again: every slot looks
            assert lost  # told (a worker registers again on it)
            sig.clear()
            await _wake_slot_0(client, channel)
            assert await sig.wait(5)
    finally:
        await client.aclose()


@pytest.fixture
def cluster_with_replicas(tmp_path: Path):
    with LocalCluster(tmp_path / "cluster", primaries=3, replicas=1) as cluster:
        yield cluster


@pytest.mark.slow
async def test_a_waker_listens_again_after_its_node_fails_over(
    cluster_with_replicas: LocalCluster, capsys
):
    cluster = cluster_with_replicas
    client = connect(cluster.url)
    keys = Keys("emp", "moved")
    channel = keys.control_channel("w1")
    try:
        async with Waker(client, keys, ["simulation"], "w1") as waker:
            sig = waker.signal(slot=0)
            owner = client.get_node_from_key(channel)  # type: ignore[attr-defined]
            victim = next(n for n in cluster.nodes if n.port == int(owner.port))
            victim.kill()  # SIGKILL: its replica is promoted after the node timeout (1 s)
            killed_at = time.monotonic()
            # The lost connection rings every slot (wake-ups may be lost meanwhile) ...
            assert await sig.wait(10)
            # ... and the Waker subscribes on the promoted replica by itself.
            async with asyncio.timeout(20):
                while not (new_port := _listening_node(cluster, channel, victim.port)):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            resubscribed_s = time.monotonic() - killed_at
            sig.clear()
            await _wake_slot_0(client, channel)
            assert await sig.wait(5)  # a wake-up SPUBLISHed on the new primary reaches it
            assert client.get_node_from_key(channel).port == new_port  # type: ignore[attr-defined]
        with capsys.disabled():
            print(
                f"\nwaker subscribed on the promoted primary {resubscribed_s:.2f} s after the kill"
            )
    finally:
        await client.aclose()


def _listening_node(cluster: LocalCluster, channel: str, dead: int) -> int | None:
    """The port of a live node where ``channel`` has a shard subscriber, if any."""
    for node in cluster.nodes:
        if node.port == dead:
            continue
        try:
            if channel in _node(node.port).execute_command("PUBSUB", "SHARDCHANNELS"):
                return node.port
        except RedisError:
            continue
    return None


async def _wake_slot_0(client, channel: str) -> None:
    """SPUBLISH a wake-up of slot 0 until a subscriber receives it (the Waker may still be
    moving to the channel's node)."""
    wake = orjson.dumps({"type": "wake", "slot": 0})
    async with asyncio.timeout(10):
        while not await _published(client, channel, wake):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _published(client, channel: str, message: bytes) -> bool:
    try:
        return int(await client.spublish(channel, message)) > 0
    except (RedisError, RedisClusterException, OSError):
        return False
