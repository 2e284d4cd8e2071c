"""Bulk operator actions (issue 17): bounded batches, a dry run that writes nothing, filters, and
claims served between the batches of a bulk retry of 10,000 dead-lettered jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from core_factories import claim_one, make_caps, make_spec

from emp_core.errors import InvalidInput
from emp_core.patterns.rules import Category, Classification
from emp_core.queue.bulk import BulkActions, BulkResult, JobFilter
from emp_core.queue.functions import Affinity
from emp_core.queue.queue import Queue
from emp_core.redis import connect
from emp_core.settings import QueueSettings

OOM = Classification(category=Category.OUT_OF_MEMORY, retryable=False, user_message="oom")


@pytest.fixture
async def node_queue(redis_node_url: str) -> AsyncIterator[Queue]:
    """One node only: the 10,000-job test runs once, not again on the cluster."""
    client = connect(redis_node_url)
    q = Queue(client, QueueSettings(redis_url=redis_node_url, queue=f"b{uuid.uuid4().hex[:10]}"))
    await q.functions.load()
    try:
        yield q
    finally:
        await client.aclose()


async def dead_letter(queue: Queue, n: int, *, service: str = "batch", customer: str = "c1",
                      classification: Classification | None = OOM) -> list[str]:  # fmt: skip
    """``n`` jobs failed for good (one attempt each), through claim and fail."""
    ids: list[str] = []
    for start in range(0, n, 1000):
        ids += await queue.submit_many(
            make_spec(service=service, customer_id=customer, max_attempts=1)
            for _ in range(min(1000, n - start))
        )
    # Claimed and failed through the library's own functions, 500 calls per pipeline (the
    # Python wrappers would parse each claimed job: slow for 10,000).
    caps = make_caps(worker_id=f"w-{service}", services=[service])
    k, s = queue.keys, queue.settings
    ckeys = [k.worker(caps.worker_id), k.leases(), k.fence(), k.delayed(), k.classes(service),
             k.worker_loras(caps.worker_id)]  # fmt: skip
    c = (
        ("", "", "")
        if classification is None
        else (classification.category.value, "", classification.user_message)
    )
    for start in range(0, n, 500):
        async with queue.redis.pipeline(transaction=False) as pipe:
            for _ in range(min(500, n - start)):
                pipe.fcall(
                    "emp_claim", len(ckeys), *ckeys, k.base, caps.wire, 60_000, s.events_maxlen, 0,
                    "", *Affinity().argv(),
                )  # fmt: skip
            replies = await pipe.execute()
        async with queue.redis.pipeline(transaction=False) as pipe:
            for _kind, body in replies:
                f = {body[i].decode(): body[i + 1].decode() for i in range(0, len(body), 2)}
                jid = f["id"]
                fkeys = [
                    k.job(jid),
                    k.events(jid),
                    k.leases(),
                    k.worker(caps.worker_id),
                    k.delayed(),
                    k.dead(),
                    k.finished(),
                ]
                pipe.fcall(
                    "emp_fail",
                    len(fkeys),
                    *fkeys,
                    k.base,
                    jid,
                    f["token"],
                    "boom",
                    0,
                    0,
                    0,
                    s.retention_seconds,
                    s.events_maxlen,
                    *c,
                )
            await pipe.execute()
    return ids


async def test_bulk_retry_of_10000_dead_jobs_in_bounded_batches(node_queue: Queue) -> None:
    queue = node_queue
    ids = await dead_letter(queue, 10_000)
    assert await queue.redis.zcard(queue.keys.dead()) == 10_000
    bulk = BulkActions(queue, batch=200)
    flt = JobFilter(status="failed", service="batch", category="out_of_memory")

    dry = await bulk.count(flt)
    assert (dry.matched, dry.touched, dry.calls) == (10_000, 0, 0)
    assert await queue.redis.zcard(queue.keys.dead()) == 10_000  # a dry run writes nothing

    # Other work keeps being claimed between the batches: each batch, a worker of another service
    # claims and completes one job.
    others = await queue.submit_many(make_spec(service="other") for _ in range(60))
    served: list[str] = []

    async def between(progress: BulkResult) -> None:
        if len(served) < len(others):
            claimed = await claim_one(queue, make_caps(worker_id="w-other", services=["other"]))
            await queue.complete(claimed, None)
            served.append(claimed.id)

    result = await bulk.retry(flt, reason="GPU driver fixed", priority=900, on_batch=between)
    assert (result.matched, result.touched, result.skipped) == (10_000, 10_000, 0)
    assert result.largest_batch <= 200  # bounded work per call
    assert result.calls == 50
    assert len(served) == 50  # a claim served after every batch
    assert await queue.redis.zcard(queue.keys.dead()) == 0
    assert (await queue.depth())["batch"] == 10_000
    job = await queue.get(ids[0])
    assert (job.status.value, job.attempts, job.priority, job.error_category) == (
        "pending", 0, 900, None,
    )  # fmt: skip
    # A fresh attempt budget: claimable again, and a failure fails it for good once more.
    claimed = await claim_one(queue, make_caps(worker_id="w2", services=["batch"]))
    assert claimed.attempt == 1


async def test_filters_dry_run_and_cancel(queue: Queue) -> None:
    oom = await dead_letter(queue, 3, customer="c1")
    other = await dead_letter(queue, 2, customer="c2", classification=None)
    bulk = BulkActions(queue, batch=2)
    assert (await bulk.count(JobFilter(status="failed", customer_id="c1"))).matched == 3
    assert (await bulk.count(JobFilter(status="failed", category="out_of_memory"))).matched == 3
    assert (await bulk.count(JobFilter(status="failed", service="batch"))).matched == 5
    job = await queue.get(other[0])
    after = JobFilter(status="failed", created_after=job.created_at)
    assert 1 <= (await bulk.count(after)).matched <= 5
    with pytest.raises(InvalidInput) as err:
        await bulk.retry(JobFilter(status="pending"), reason="x")
    assert err.value.field == "status"

    pending = await queue.submit_many(make_spec(customer_id=c) for c in ("c1", "c1", "c2"))
    result = await bulk.cancel(JobFilter(status="pending", customer_id="c1"), reason="tidy up")
    assert (result.matched, result.touched, result.largest_batch) == (2, 2, 2)
    statuses = [(await queue.get(j)).status.value for j in pending]
    assert statuses == ["cancelled", "cancelled", "pending"]
    retried = await bulk.retry(JobFilter(status="failed", customer_id="c1"), reason="again")
    # The dead set is ordered by time of death: five deaths in one millisecond tie, and ties
    # order by id, so a page of two may hold one c1 job and one c2 job. Bounded either way.
    assert retried.touched == 3
    assert 1 <= retried.largest_batch <= 2
    assert {(await queue.get(j)).status.value for j in oom} == {"pending"}


async def test_requeue_a_stuck_job_and_purge_dead(redis: aioredis.Redis, queue: Queue) -> None:
    job_id = await queue.submit(make_spec())
    stuck = await claim_one(queue, make_caps(worker_id="w-stuck"))
    assert await queue.functions.requeue(job_id, "stuck", queue.settings.events_maxlen) == "claimed"
    job = await queue.get(job_id)
    assert (job.status.value, job.attempts, job.worker_id) == ("pending", 0, None)
    with pytest.raises(Exception, match="token"):
        await queue.complete(stuck, None)  # the stuck worker's report is refused as stale
    dead = await dead_letter(queue, 3)
    purged = await BulkActions(queue, batch=2).purge_dead(datetime.now(UTC) + timedelta(minutes=1))
    assert (purged.touched, purged.largest_batch) == (3, 2)
    assert not await redis.exists(*(queue.keys.job(j) for j in dead))
