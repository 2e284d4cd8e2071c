"""The event hub on a real Redis Cluster with three queues on three primaries: one sharded
subscription hears every queue's events on its own node, and revocations beside them."""

from __future__ import annotations

import asyncio
import time

import redis as sync_redis

from emp_core.jobs.events import JobEvent
from emp_core.queue.keys import Keys
from emp_core.queue.queue import Queue
from emp_core.redis import connect
from emp_core.redis.cluster import primaries
from emp_core.settings import QueueSettings
from emp_sql.revocations import Revocation, publish
from emp_web.hub import EventHub


def _spread_queues(client, count: int) -> list[str]:
    """Queue names whose slots are on ``count`` different primaries."""
    names: dict[int, str] = {}
    for i in range(1000):
        name = f"hub{i}"
        port = client.get_node_from_key(Keys("emp", name).events_channel()).port
        names.setdefault(port, name)
        if len(names) == count:
            return list(names.values())
    raise AssertionError("no spread of queue names found")


async def test_one_hub_hears_every_queue_on_its_own_primary(redis_cluster_url: str, capsys):
    client = connect(redis_cluster_url)
    await client.initialize()  # type: ignore[attr-defined]
    names = _spread_queues(client, 3)
    queues = [Queue(client, QueueSettings(redis_url=redis_cluster_url, queue=n)) for n in names]
    await queues[0].functions.load()
    revocations = queues[0].keys.revocations_channel()
    hub = EventHub(client, [q.keys.events_channel() for q in queues], revocations=revocations)
    heard: dict[str, float] = {}
    hub.listen(lambda event: _note(heard, event))
    revoked: list[Revocation | None] = []
    hub.on_revocation(revoked.append)
    await hub.start()
    try:
        for q in queues:  # each events channel has its one shard subscriber on its own node
            port = client.get_node_from_key(q.keys.events_channel()).port  # type: ignore[attr-defined]
            node = sync_redis.Redis(port=port, decode_responses=True)
            channel = q.keys.events_channel()
            assert node.execute_command("PUBSUB", "SHARDNUMSUB", channel) == [channel, 1]
            assert node.pubsub_numsub(channel) == [(channel, 0)]  # nothing classic
        submitted = {}
        for q in queues:
            job_id = await q.submit({"service": "simulation"})
            submitted[job_id] = time.monotonic()
        async with asyncio.timeout(5):
            while set(heard) != set(submitted):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await publish(client, queues[0].keys, Revocation(token_ids=("t1",)))
        async with asyncio.timeout(5):
            while not revoked:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert revoked[0] is not None
        assert revoked[0].token_ids == ("t1",)
        ms = sorted(round((heard[j] - at) * 1000, 1) for j, at in submitted.items())
        with capsys.disabled():
            print(f"\nhub on {len(primaries(client))} primaries, submit to heard: {ms} ms")
    finally:
        await hub.stop()
        await client.aclose()


def _note(heard: dict[str, float], event: JobEvent) -> None:
    heard.setdefault(event.job_id, time.monotonic())
