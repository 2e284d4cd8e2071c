"""The per-minute counters the dashboard charts read: they move with real jobs going through the
Lua library (submit, first claim, complete, retry, fail, cancel) and with the depth sample, and
reading them costs the same however many jobs there are."""

from __future__ import annotations

import redis.asyncio as aioredis
from core_factories import claim_one, make_caps, make_spec, redis_now_ms

from emp_core.queue.queue import Queue
from emp_core.queue.stats import STATS_TTL_S, History, history, minute_of, sample_depth
from emp_core.settings import QueueSettings


async def _last_minutes(queue: Queue, redis: aioredis.Redis) -> History:
    # A few minutes, so a test that runs across a minute's end still sees all it counted.
    return await history(redis, queue.keys, now_ms=await redis_now_ms(redis), minutes=3)


async def test_counters_move_with_real_jobs(queue: Queue, redis: aioredis.Redis) -> None:
    caps = make_caps()  # simulation only: the sdxl job stays pending
    ids = [await queue.submit(make_spec(max_attempts=2)) for _ in range(4)]
    await queue.submit(make_spec(service="sdxl"))

    await queue.cancel(ids[3])
    done = await claim_one(queue, caps)
    await queue.complete(done, {"ok": True})
    flaky = await claim_one(queue, caps)
    assert await queue.fail(flaky, "boom", delay_s=0) == "retrying"
    broken = await claim_one(queue, caps)
    assert await queue.fail(broken, "bad input", retryable=False) == "failed"
    # The retried job, due at once (on another worker: a retry avoids the last one for a
    # grace period); a second claim is not a first claim, so it adds no wait.
    again = await claim_one(queue, make_caps(worker_id="w2"))
    assert again.id == flaky.id
    await queue.complete(again, None)
    await sample_depth(redis, queue.keys)

    h = await _last_minutes(queue, redis)
    assert h.services == ["sdxl", "simulation"]
    total = {m: sum(h.series(m, "simulation")) for m in
             ("submitted", "completed", "failed", "retried", "cancelled", "waited")}  # fmt: skip
    assert total == {"submitted": 4, "completed": 2, "failed": 1, "retried": 1, "cancelled": 1,
                     "waited": 3}  # fmt: skip
    assert sum(h.series("submitted", "sdxl")) == 1
    assert sum(h.series("completed", "sdxl")) == 0
    # The depth sample: the sdxl job is still pending, every simulation job has left the line.
    sampled = [d for d in h.depth("sdxl") if d is not None]
    assert sampled[-1] == 1
    assert [d for d in h.depth("simulation") if d is not None][-1] == 0
    waits = [w for w in h.mean_wait_s("simulation") if w is not None]
    assert waits
    assert all(0 <= w < 60 for w in waits)
    ttl = await redis.ttl(queue.keys.minute_stats(minute_of(await redis_now_ms(redis))))
    assert 0 < ttl <= STATS_TTL_S


async def _hgetalls(redis: aioredis.Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_hgetall", {}).get("calls", 0))


async def test_an_hour_is_one_pipeline_whatever_the_jobs(
    private_redis: aioredis.Redis, settings: QueueSettings
) -> None:
    # On a server of its own (INFO counts a whole server's commands).
    queue = Queue(private_redis, settings)
    await queue.functions.load()
    read = []
    for n in (10, 1000):
        await queue.submit_many([make_spec() for _ in range(n)])
        before = await _hgetalls(private_redis)
        h = await history(private_redis, queue.keys, now_ms=await redis_now_ms(private_redis))
        read.append(await _hgetalls(private_redis) - before)
        assert len(h.minutes) == 60
    assert sum(h.series("submitted", "simulation")) == 1010
    assert read == [60, 60]
