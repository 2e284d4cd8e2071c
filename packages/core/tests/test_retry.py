"""Retries: exponential backoff, a preference for another worker, and the dead-letter set."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
import redis.asyncio as aioredis
from core_factories import (
    claim_one,
    event_types,
    make_caps,
    make_spec,
    redis_now_ms,
    stream_events,
    with_settings,
)

from emp_core.errors import InvalidInput
from emp_core.jobs.job import retry_delay
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings

W1 = make_caps(worker_id="w1")
W2 = make_caps(worker_id="w2")


def at_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "expected"),
    [
        (1, 2.0, 300.0, 2.0),
        (2, 2.0, 300.0, 4.0),
        (3, 2.0, 300.0, 8.0),
        (8, 2.0, 300.0, 256.0),
        (9, 2.0, 300.0, 300.0),
        (50, 2.0, 300.0, 300.0),
        (3, 0.5, 300.0, 2.0),
        (1, 10.0, 5.0, 5.0),
        (4, 0.0, 300.0, 0.0),
    ],
)
def test_retry_delay_doubles_from_base_up_to_cap(
    attempt: int, base: float, cap: float, expected: float
) -> None:
    assert retry_delay(attempt, base=base, cap=cap) == expected


def test_retry_delay_jitter_spreads_either_way_within_the_fraction() -> None:
    assert retry_delay(3, base=2, cap=300, jitter=0.2, rand=lambda: 0.0) == pytest.approx(6.4)
    assert retry_delay(3, base=2, cap=300, jitter=0.2, rand=lambda: 0.5) == pytest.approx(8.0)
    assert retry_delay(3, base=2, cap=300, jitter=0.2, rand=lambda: 0.999) == pytest.approx(
        9.6, 1e-2
    )
    spread = {round(retry_delay(1, base=10, cap=300, jitter=0.2), 3) for _ in range(50)}
    assert len(spread) > 10
    assert all(8 <= d <= 12 for d in spread)


def test_retry_delay_refuses_attempt_zero() -> None:
    with pytest.raises(InvalidInput) as info:
        retry_delay(0, base=2, cap=300)
    assert info.value.field == "attempt"


async def test_failure_waits_out_the_backoff(
    redis: aioredis.Redis, queue: Queue, settings: QueueSettings
) -> None:
    q = Queue(
        redis,
        with_settings(
            settings, retry_base_seconds=0.5, retry_avoid_grace_seconds=0, retry_jitter=0
        ),
    )
    job_id = await q.submit(make_spec())
    claimed = await claim_one(q, W1)
    before = await redis_now_ms(redis)
    assert await q.fail(claimed, "CUDA out of memory") == "retrying"
    after = await redis_now_ms(redis)

    job = await q.get(job_id)
    assert (job.status, job.error, job.worker_id) == ("retrying", "CUDA out of memory", "w1")
    due = await redis.zscore(q.keys.delayed(), job_id)
    assert due is not None
    assert job.retry_at is not None
    assert at_ms(job.retry_at) == due
    assert before + 500 <= due <= after + 500
    assert await q.depth() == {}

    early = await q.claim(W2)
    assert early.claimed is None
    assert early.retry_in is not None
    assert 0 < early.retry_in <= 0.5

    await asyncio.sleep(max(0.0, (due - await redis_now_ms(redis)) / 1000) + 0.02)
    late = await claim_one(q, W2)  # the claim itself promotes the due retry
    assert (late.id, late.attempt) == (job_id, 2)
    assert await redis.zscore(q.keys.delayed(), job_id) is None
    requeued = [e for e in await stream_events(redis, q.keys, job_id) if e["type"] == "requeued"]
    assert [e["reason"] for e in requeued] == ["retry_due"]


async def test_backoff_doubles_with_each_attempt(
    redis: aioredis.Redis, queue: Queue, settings: QueueSettings
) -> None:
    q = Queue(
        redis,
        with_settings(settings, retry_base_seconds=5, retry_avoid_grace_seconds=0, retry_jitter=0),
    )
    job_id = await q.submit(make_spec(max_attempts=5))
    first = await claim_one(q, W1)
    await q.fail(first, "flaky", delay_s=0)  # due at once, so the test need not wait
    second = await claim_one(q, W1)
    assert second.attempt == 2
    now = await redis_now_ms(redis)
    await q.fail(second, "flaky again")
    due = await redis.zscore(q.keys.delayed(), job_id)
    assert due is not None
    assert now + 10_000 <= due <= now + 10_000 + 1_000  # 5 s doubled once


async def test_backoff_is_capped(
    redis: aioredis.Redis, queue: Queue, settings: QueueSettings
) -> None:
    q = Queue(
        redis,
        with_settings(settings, retry_base_seconds=60, retry_cap_seconds=1, retry_jitter=0),
    )
    job_id = await q.submit(make_spec())
    now = await redis_now_ms(redis)
    await q.fail(await claim_one(q, W1), "flaky")
    due = await redis.zscore(q.keys.delayed(), job_id)
    assert due is not None
    assert now + 1_000 <= due <= now + 2_000


async def test_failing_worker_is_avoided_during_the_grace(
    redis: aioredis.Redis, queue: Queue, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, retry_avoid_grace_seconds=5))
    job_id = await q.submit(make_spec())
    await q.fail(await claim_one(q, W1), "boom", delay_s=0)

    refused = await q.claim(W1)
    assert refused.claimed is None
    assert refused.retry_in is not None
    assert 4 < refused.retry_in <= 5  # a hint: when the grace ends
    # The job is pending again (promoted by W1's claim) but held for another worker.
    assert (await q.get(job_id)).status == "pending"
    other = await claim_one(q, W2)
    assert (other.id, other.attempt) == (job_id, 2)


async def test_failing_worker_gets_the_job_back_after_the_grace(
    redis: aioredis.Redis, queue: Queue, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, retry_avoid_grace_seconds=0.5))
    job_id = await q.submit(make_spec())
    await q.fail(await claim_one(q, W1), "boom", delay_s=0)
    assert (await q.claim(W1)).claimed is None
    await asyncio.sleep(0.55)
    again = await claim_one(q, W1)
    assert (again.id, again.attempt) == (job_id, 2)


async def test_avoided_head_does_not_block_the_rest_of_its_class(
    redis: aioredis.Redis, queue: Queue, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, retry_avoid_grace_seconds=5))
    failed = await q.submit(make_spec(priority=90))
    other = await q.submit(make_spec(priority=10))
    await q.fail(await claim_one(q, W1), "boom", delay_s=0)
    assert (await claim_one(q, W1)).id == other
    assert (await claim_one(q, W2)).id == failed


async def test_dead_letter_after_max_attempts(
    redis: aioredis.Redis, queue: Queue, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, retry_avoid_grace_seconds=0))
    job_id = await q.submit(make_spec(max_attempts=3))
    outcomes = []
    for attempt in (1, 2, 3):
        claimed = await claim_one(q, W1)
        assert claimed.attempt == attempt
        outcomes.append(await q.fail(claimed, f"error on attempt {attempt}", delay_s=0))
    assert outcomes == ["retrying", "retrying", "failed"]

    job = await q.get(job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 3, "error on attempt 3")
    assert job.finished_at is not None
    assert await redis.zscore(q.keys.dead(), job_id) is not None
    assert await redis.zscore(q.keys.delayed(), job_id) is None
    assert await redis.ttl(q.keys.job(job_id)) == -1  # kept until an operator deals with it
    assert (await q.claim(W2)).claimed is None
    types = await event_types(redis, q.keys, job_id)
    assert types.count("retrying") == 2
    assert types[-1] == "failed"


async def test_non_retryable_failure_is_final_at_once(redis: aioredis.Redis, queue: Queue) -> None:
    job_id = await queue.submit(make_spec(max_attempts=5))
    claimed = await claim_one(queue, W1)
    assert await queue.fail(claimed, "invalid prompt", retryable=False) == "failed"
    job = await queue.get(job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 1, "invalid prompt")
    assert await redis.zscore(queue.keys.dead(), job_id) is not None
    assert await redis.zscore(queue.keys.delayed(), job_id) is None


async def test_reaper_promotes_due_retries(redis: aioredis.Redis, queue: Queue) -> None:
    job_id = await queue.submit(make_spec())
    await queue.fail(await claim_one(queue, W1), "boom", delay_s=0)
    assert await queue.reap() == (0, 0, 1)
    assert (await queue.get(job_id)).status == "pending"
    assert await queue.depth() == {"simulation": 1}
