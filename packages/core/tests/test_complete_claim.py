"""emp_complete with a next claim: the worker's finished job and its next job in one call."""

from __future__ import annotations

import pytest
from core_factories import make_caps, make_spec

from emp_core.errors import InvalidInput, StaleToken
from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue


async def test_complete_then_claim_takes_the_next_job_atomically(queue: Queue) -> None:
    caps = make_caps(worker_id="w1")
    first, second = await queue.submit_many([make_spec(priority=90), make_spec(priority=10)])
    claimed = (await queue.claim(caps)).claimed
    assert claimed is not None
    assert claimed.id == first

    following = await queue.complete(claimed, {"ok": 1}, then_claim=caps)

    assert following.claimed is not None
    assert following.claimed.id == second
    assert following.claimed.token != claimed.token
    assert (await queue.get(first)).status is JobStatus.COMPLETED
    assert (await queue.get(second)).status is JobStatus.CLAIMED
    assert (await queue.get(second)).worker_id == "w1"
    # Nothing left: the same call says so, with no wait hint.
    last = await queue.complete(following.claimed, None, then_claim=caps)
    assert last.claimed is None
    assert last.retry_in is None
    assert await queue.depth() == {}


async def test_a_stale_complete_claims_nothing(queue: Queue) -> None:
    caps = make_caps(worker_id="w1")
    job_id, waiting = await queue.submit_many([make_spec(priority=90), make_spec()])
    claimed = (await queue.claim(caps)).claimed
    assert claimed is not None
    await queue.cancel(job_id)
    with pytest.raises(StaleToken):
        await queue.complete(claimed, None, then_claim=caps)
    assert (await queue.get(waiting)).status is JobStatus.PENDING


async def test_bad_claim_arguments_refuse_the_complete_too(queue: Queue, redis) -> None:
    caps = make_caps(worker_id="w1")
    job_id = await queue.submit(make_spec())
    claimed = (await queue.claim(caps)).claimed
    assert claimed is not None
    k = queue.keys
    keys = [k.job(job_id), k.events(job_id), k.leases(), k.worker("w1"), k.finished(),
            k.fence(), k.delayed(), k.classes("simulation")]  # fmt: skip
    with pytest.raises(Exception, match="lease_ms") as info:
        await redis.fcall(
            "emp_complete", len(keys), *keys, k.base, job_id, claimed.token, b"null", 60, 100,
            caps.wire, "soon", 10,
        )  # fmt: skip
    assert "EMP_INVALID" in str(info.value)
    assert (await queue.get(job_id)).status is JobStatus.CLAIMED
    with pytest.raises(InvalidInput):
        await queue.functions.complete("w1", job_id, claimed.token, b"not json", 60, 100, None)
