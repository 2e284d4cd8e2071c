"""Job forensics from the event stream (issue 17): attempts with worker, machine, times,
progress, failure category and retry delay, lost leases."""

from __future__ import annotations

import redis.asyncio as aioredis
from core_factories import claim_one, make_caps, make_spec, with_settings

from emp_core.jobs.events import replay
from emp_core.jobs.forensics import forensics
from emp_core.patterns.rules import Category, Classification
from emp_core.queue.queue import Queue


async def test_failed_twice_then_completed_on_a_third_worker(queue: Queue) -> None:
    job_id = await queue.submit(make_spec(max_attempts=3))
    workers = [make_caps(worker_id=f"m{i}-simulation-0", machine_id=f"m{i}") for i in (1, 2, 3)]
    first = await claim_one(queue, workers[0])
    await queue.progress(first, 40, "step 2/5")
    await queue.fail(
        first, "CUDA out of memory", delay_s=0,
        classification=Classification(category=Category.OUT_OF_MEMORY, retryable=True,
                                      user_message="The GPU ran out of memory.", pattern_id="p1"),
    )  # fmt: skip
    second = await claim_one(queue, workers[1])
    assert second.id == job_id
    await queue.progress(second, 10)
    await queue.fail(second, "connection reset", delay_s=2)
    await queue.redis.zadd(queue.keys.delayed(), {job_id: 0})  # the backoff is over
    third = await claim_one(queue, workers[2])
    assert third.id == job_id
    await queue.progress(third, 60)
    await queue.complete(third, {"ok": True})

    job = await queue.get(job_id)
    report = forensics(job, await replay(queue.redis, queue.keys, job_id), source="redis")
    assert (report.complete, report.retries, report.lost_leases) == (True, 2, 0)
    a1, a2, a3 = report.attempts
    assert [
        (a.number, a.attempt, a.worker_id, a.machine_id, a.outcome) for a in report.attempts
    ] == [
        (1, 1, "m1-simulation-0", "m1", "retrying"),
        (2, 2, "m2-simulation-0", "m2", "retrying"),
        (3, 3, "m3-simulation-0", "m3", "completed"),
    ]
    assert (a1.progress, a1.error, a1.category, a1.retry_delay_s) == (
        40.0, "CUDA out of memory", "out_of_memory", 0.0,
    )  # fmt: skip
    assert (a2.progress, a2.error, a2.category) == (10.0, "connection reset", None)
    assert a2.retry_delay_s == 2.0  # the delay asked for (delay_s bypasses the jitter)
    assert (a3.progress, a3.error) == (100.0, None)
    for a in report.attempts:
        assert a.started_at is not None
        assert a.ended_at is not None
        assert a.claimed_at <= a.started_at <= a.ended_at
        assert (a.waited_s or 0) >= 0
        assert a.waited_s is not None
        assert a.run_s is not None
        assert a.run_s == round((a.ended_at - a.claimed_at).total_seconds(), 3)
    # Millisecond clock: three claims in a row can share one reading.
    assert a1.claimed_at <= a2.claimed_at <= a3.claimed_at
    assert report.events[0].type.value == "submitted"


async def test_a_lost_lease_is_an_attempt_that_spent_nothing(
    redis: aioredis.Redis, queue: Queue
) -> None:
    fast = Queue(redis, with_settings(queue.settings, lease_seconds=0.05))
    job_id = await fast.submit(make_spec())
    await claim_one(fast, make_caps(worker_id="w-dead", machine_id="m9"))
    await redis.zadd(fast.keys.leases(), {job_id: 0})  # the lease ran out
    assert (await fast.reap())[0] == 1
    claimed = await claim_one(fast, make_caps(worker_id="w-alive"))
    await fast.complete(claimed, None)
    job = await fast.get(job_id)
    report = forensics(job, await replay(redis, fast.keys, job_id), source="redis")
    assert [(a.worker_id, a.attempt, a.outcome, a.reason) for a in report.attempts] == [
        ("w-dead", 1, "lost", "lease_expired"),
        ("w-alive", 1, "completed", None),
    ]
    assert report.lost_leases == 1
