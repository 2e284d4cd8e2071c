"""Leases, fencing tokens and the reaper: an expired claim returns to pending, a stale token is
refused, and reaping is idempotent when several processes run it at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from core_factories import (
    claim_one,
    event_types,
    make_caps,
    make_spec,
    stream_events,
    with_settings,
)

from emp_core.errors import NotFound, StaleToken
from emp_core.queue.queue import ClaimedJob, Queue
from emp_core.redis import connect
from emp_core.settings import QueueSettings

SHORT_LEASE = 0.05


@pytest.fixture
def short(queue: Queue, redis: aioredis.Redis, settings: QueueSettings) -> Queue:
    """The same queue as ``queue``, with leases of 50 ms."""
    return Queue(redis, with_settings(settings, lease_seconds=SHORT_LEASE))


async def expire_and_reap(queue: Queue) -> tuple[int, int, int]:
    await asyncio.sleep(SHORT_LEASE * 2)
    return await queue.reap()


def reports(queue: Queue, claimed: ClaimedJob) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Every call a worker makes with its token."""
    return {
        "heartbeat": lambda: queue.heartbeat(claimed),
        "progress": lambda: queue.progress(claimed, 50, "half way"),
        "complete": lambda: queue.complete(claimed, {"ok": True}),
        "fail": lambda: queue.fail(claimed, "boom"),
    }


@pytest.mark.parametrize("call", ["heartbeat", "progress", "complete", "fail"])
async def test_stale_token_refused_after_reap_and_reclaim(
    short: Queue, redis: aioredis.Redis, call: str
) -> None:
    job_id = await short.submit(make_spec())
    old = await claim_one(short, make_caps(worker_id="w1"))
    assert await expire_and_reap(short) == (1, 0, 0)
    new = await claim_one(short, make_caps(worker_id="w2"))
    assert new.id == job_id
    assert int(new.token) > int(old.token)

    with pytest.raises(StaleToken) as info:
        await reports(short, old)[call]()
    assert info.value.field == "token"
    assert job_id in info.value.message

    # The new holder is unaffected and finishes the job.
    job = await short.get(job_id)
    # The lost lease gave its attempt back (the worker died, the job did not fail).
    assert (job.status, job.worker_id, job.attempts, job.lost_leases) == ("claimed", "w2", 1, 1)
    await short.progress(new, 10)
    await short.complete(new, {"by": "w2"})
    assert (await short.get(job_id)).result == {"by": "w2"}


@pytest.mark.parametrize("call", ["heartbeat", "progress", "complete", "fail"])
async def test_stale_token_refused_after_cancel(queue: Queue, call: str) -> None:
    job_id = await queue.submit(make_spec())
    claimed = await claim_one(queue, make_caps())
    await queue.progress(claimed, 5)
    await queue.cancel(job_id)
    with pytest.raises(StaleToken):
        await reports(queue, claimed)[call]()
    assert (await queue.get(job_id)).status == "cancelled"


async def test_forged_token_refused(queue: Queue) -> None:
    job_id = await queue.submit(make_spec())
    claimed = await claim_one(queue, make_caps())
    forged = ClaimedJob(claimed.job, str(int(claimed.token) + 1), claimed.lease_deadline_ms)
    with pytest.raises(StaleToken):
        await queue.complete(forged, None)
    with pytest.raises(StaleToken):
        await queue.complete(ClaimedJob(claimed.job, "", 0), None)
    assert (await queue.get(job_id)).status == "claimed"


async def test_reports_on_an_unknown_job_raise_not_found(queue: Queue) -> None:
    await queue.submit(make_spec())
    claimed = await claim_one(queue, make_caps())
    ghost = ClaimedJob(claimed.job.model_copy(update={"id": "nope"}), claimed.token, 0)
    with pytest.raises(NotFound):
        await queue.heartbeat(ghost)
    with pytest.raises(NotFound):
        await queue.complete(ghost, None)


async def test_heartbeat_renews_the_lease(
    short: Queue, queue: Queue, redis: aioredis.Redis
) -> None:
    job_id = await short.submit(make_spec())
    claimed = await claim_one(short, make_caps())
    # Renew through the queue with the default (10 s) lease: the short one no longer applies.
    deadline = await queue.heartbeat(claimed)
    assert deadline > claimed.lease_deadline_ms + 5_000
    assert await redis.zscore(queue.keys.leases(), job_id) == deadline
    assert await expire_and_reap(short) == (0, 0, 0)
    assert (await short.get(job_id)).status == "claimed"


async def test_reaper_returns_an_expired_claim_to_pending(
    short: Queue, redis: aioredis.Redis
) -> None:
    job_id = await short.submit(make_spec(customer_id="acme", workflow_id="wf"))
    await redis.hset(short.keys.worker("w1"), mapping={"state": "idle"})
    claimed = await claim_one(short, make_caps(worker_id="w1"))
    assert await redis.hget(short.keys.worker("w1"), "state") == b"busy"
    assert await short.depth() == {}

    assert await expire_and_reap(short) == (1, 0, 0)

    job = await short.get(job_id)
    assert (job.status, job.worker_id, job.attempts, job.lost_leases) == ("pending", None, 0, 1)
    assert await short.depth() == {"simulation": 1}
    assert await redis.zscore(short.keys.leases(), job_id) is None
    for key in (
        short.keys.pending(job.class_id),
        short.keys.pending_customer(job.class_id, "acme"),
        short.keys.pending_workflow(job.class_id, "wf"),
    ):
        assert await redis.zscore(key, job_id) is not None, key
    assert await redis.hget(short.keys.worker("w1"), "state") == b"idle"
    requeued = (await stream_events(redis, short.keys, job_id))[-1]
    assert (requeued["type"], requeued["reason"]) == ("requeued", "lease_expired")

    again = await claim_one(short, make_caps(worker_id="w2"))
    assert (again.id, again.attempt) == (job_id, 1)  # the lost lease spent no attempt
    assert again.token != claimed.token


async def test_reaping_concurrently_requeues_each_job_once(
    short: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    ids = await short.submit_many([make_spec() for _ in range(40)])
    for i in range(len(ids)):
        await claim_one(short, make_caps(worker_id=f"w{i}"))
    await asyncio.sleep(SHORT_LEASE * 2)

    clients = [connect(settings.redis_url) for _ in range(6)]
    try:
        # A small limit makes the reapers interleave over several calls each.
        results = await asyncio.gather(
            *(Queue(c, settings).reap(limit=5) for c in clients for _ in range(3))
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))

    assert sum(r[0] for r in results) == len(ids)
    assert sum(r[1] for r in results) == 0
    assert await short.reap() == (0, 0, 0)
    assert await short.depth() == {"simulation": len(ids)}
    for job_id in ids:
        assert (await event_types(redis, short.keys, job_id)).count("requeued") == 1


async def test_lost_leases_spend_no_attempt_until_their_own_limit(
    short: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    """A job whose worker dies on every claim (it kills its worker, say) is re-queued without
    spending its normal attempts, and fails with category ``lost`` past ``max_lost_leases``."""
    q = Queue(redis, with_settings(settings, lease_seconds=SHORT_LEASE, max_lost_leases=3))
    job_id = await q.submit(make_spec(max_attempts=2))
    for n in range(1, 4):
        await claim_one(q, make_caps(worker_id=f"w{n}"))
        assert await expire_and_reap(q) == (1, 0, 0)
        job = await q.get(job_id)
        assert (job.status, job.attempts, job.lost_leases) == ("pending", 0, n)
    await claim_one(q, make_caps(worker_id="w4"))
    assert await expire_and_reap(q) == (0, 1, 0)

    job = await q.get(job_id)
    assert (job.status, job.error_category, job.lost_leases) == ("failed", "lost", 4)
    assert job.error is not None
    assert "w4" in job.error
    assert "4 times" in job.error
    assert await redis.zscore(q.keys.dead(), job_id) is not None
    assert await q.depth() == {}
    assert (await q.claim(make_caps(worker_id="w5"))).claimed is None
    assert (await event_types(redis, q.keys, job_id))[-1] == "failed"


async def test_a_normal_failure_still_spends_an_attempt_after_lost_leases(
    short: Queue,
) -> None:
    job_id = await short.submit(make_spec(max_attempts=1))
    await claim_one(short, make_caps(worker_id="w1"))
    assert await expire_and_reap(short) == (1, 0, 0)
    assert await short.fail(await claim_one(short, make_caps(worker_id="w2")), "boom") == "failed"
    job = await short.get(job_id)
    assert (job.status, job.attempts, job.lost_leases) == ("failed", 1, 1)


async def test_the_reaper_gate_lets_one_of_many_processes_sweep_per_interval(
    short: Queue, redis: aioredis.Redis
) -> None:
    """N processes ticking the shared reaper cost one sweep per interval: the lock key (SET NX
    PX inside emp_reap) turns every other tick into a no-op."""
    from emp_core.queue.reaper import Reaper

    reapers = [Reaper(short, owner=f"p{i}") for i in range(50)]
    swept = [await r.tick() for r in reapers]
    assert swept.count(True) == 1
    assert await redis.get(short.keys.reaper_lock()) == b"p0"
    # Once the interval's lock is gone, the next tick sweeps again.
    await redis.delete(short.keys.reaper_lock())
    assert await reapers[7].tick() is True
    assert sum(r.stats.sweeps for r in reapers) == 2
    assert sum(r.stats.ticks for r in reapers) == 51


async def test_release_returns_the_job_without_spending_an_attempt(
    queue: Queue, redis: aioredis.Redis
) -> None:
    job_id = await queue.submit(make_spec())
    claimed = await claim_one(queue, make_caps(worker_id="w1"))
    await queue.release(claimed, "shutdown")
    job = await queue.get(job_id)
    assert (job.status, job.attempts) == ("pending", 0)
    assert await redis.zscore(queue.keys.leases(), job_id) is None
    with pytest.raises(StaleToken):
        await queue.complete(claimed, None)
    again = await claim_one(queue, make_caps(worker_id="w2"))
    assert (again.id, again.attempt) == (job_id, 1)


def test_default_lease_and_reap_interval_recover_within_30_seconds() -> None:
    """A dead worker's job is back in the queue by lease expiry plus one reap interval."""
    s = QueueSettings()
    assert s.lease_seconds + s.reap_interval_seconds <= 30
