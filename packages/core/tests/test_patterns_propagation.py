"""Propagation: a saved snapshot reaches a running cache within seconds of its announcement, a
missed announcement is made up by the periodic re-read, and no snapshot means the starter set."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from core_factories import make_rule

from emp_core.patterns import PatternCache, Snapshot
from emp_core.patterns.counts import record, unmatched
from emp_core.patterns.store import publish_snapshot, read_snapshot
from emp_core.queue.queue import Queue


async def _until(predicate: object, within: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():  # type: ignore[operator]
        assert loop.time() - start < within, "timed out"
        await asyncio.sleep(0.01)
    return loop.time() - start


async def test_announced_snapshot_is_used_within_seconds(queue: Queue) -> None:
    cache = PatternCache(queue.redis, queue.keys, refresh_s=3600)
    await cache.start()
    try:
        assert cache.snapshot.source == "starter"
        assert await publish_snapshot(queue.redis, queue.keys, Snapshot.build(3, [make_rule()]))
        # refresh_s=3600: no periodic re-read happens here, so the announcement brought it
        # (``within`` only stops a hang; no speed is asserted on a shared machine).
        await _until(lambda: cache.version == 3, within=30)
        assert cache.classify("boom!").pattern_id == "p1"
    finally:
        await cache.stop()


async def test_a_lost_announcement_is_made_up_by_the_periodic_reread(
    queue: Queue, redis: aioredis.Redis
) -> None:
    cache = PatternCache(queue.redis, queue.keys, refresh_s=0.3, subscribe=False)
    await cache.start()
    try:
        # Written without PUBLISH: the announcement is lost.
        await redis.set(
            queue.keys.patterns_snapshot(),
            __import__("orjson").dumps(Snapshot.build(5, [make_rule()]).to_wire()),
        )
        await _until(lambda: cache.version == 5, within=3)
    finally:
        await cache.stop()


async def test_an_older_snapshot_never_replaces_a_newer_one(queue: Queue) -> None:
    assert await publish_snapshot(queue.redis, queue.keys, Snapshot.build(9, []))
    assert not await publish_snapshot(queue.redis, queue.keys, Snapshot.build(8, [make_rule()]))
    stored = await read_snapshot(queue.redis, queue.keys)
    assert stored is not None
    assert stored.version == 9


async def test_unmatched_messages_are_kept_most_frequent_first(queue: Queue) -> None:
    miss = Snapshot.build(1, []).classify("x")
    for message, times in (("rare", 1), ("common", 3)):
        for _ in range(times):
            await record(queue.redis, queue.keys, miss, message, "simulation")
    assert await unmatched(queue.redis, queue.keys) == [("common", 3), ("rare", 1)]
