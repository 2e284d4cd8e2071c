"""The diffusers connector inside a real worker on real Redis: progress events carry previews,
a cancel stops the pipeline, a bad parameter fails the job for good with its field named."""

from __future__ import annotations

import asyncio

import pytest
from diffusers_helpers import MemoryBlobs, require_gpu_stack, tiny_model
from worker_helpers import eventually, job_events, make_worker_settings

from emp_core.blobs.retention import sweep
from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_worker.worker import Worker

require_gpu_stack()

from emp_worker.connectors.diffusers import DiffusersConnector  # noqa: E402

BASE = {"prompt": "a red bicycle", "width": 64, "height": 64, "steps": 4, "seed": 3,
        "preview_every": 2}  # fmt: skip


@pytest.fixture(scope="module")
def connector() -> DiffusersConnector:
    return DiffusersConnector.from_folder(tiny_model(), model_name="tiny", outputs=MemoryBlobs())


def worker_for(settings, redis, connector, **overrides) -> Worker:
    s = make_worker_settings(settings, services=["diffusers"], **overrides)
    return Worker(s, redis=redis, connectors={"diffusers": connector})


async def test_a_job_runs_with_progress_events_and_previews(
    redis, queue: Queue, settings, connector
):
    assert connector.store is not None
    job_id = await queue.submit({"service": "diffusers", "payload": BASE})
    stats = await worker_for(settings, redis, connector).run()

    assert stats.completed == 1
    job = await queue.get(job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.result["images"][0]["width"] == 64
    events = await job_events(redis, queue, job_id)
    progress = [e for e in events if e["type"] == "progress"]
    # Steps in order, ending with the last; several waiting at once are sent as the newest.
    messages = [e["message"] for e in progress]
    assert messages[-1] == "step 4 of 4"
    assert messages == sorted(messages)
    assert set(messages) <= {f"step {i} of 4" for i in range(1, 5)}
    previews = [e["preview"] for e in progress if "preview" in e]
    assert 1 <= len(previews) <= 2
    assert all(p.startswith("data:image/jpeg;base64,") for p in previews)
    assert "preview" not in await redis.hgetall(queue.keys.job(job_id))  # events only

    # The output leaves the blob store with the job, after its retention.
    path = job.result["images"][0]["path"]
    assert path in connector.store.blobs
    due = await redis.zscore(queue.keys.outputs(), path)
    finished_ms = job.finished_at.timestamp() * 1000
    assert abs(due - (finished_ms + settings.retention_seconds * 1000)) < 60_000
    assert await sweep(redis, queue.keys, connector.store, now_ms=int(due) - 1) == 0
    assert path in connector.store.blobs
    assert await sweep(redis, queue.keys, connector.store, now_ms=int(due)) == 1
    assert path not in connector.store.blobs
    assert await redis.zscore(queue.keys.outputs(), path) is None


async def test_a_bad_parameter_fails_for_good_naming_the_field(
    redis, queue: Queue, settings, connector
):
    # 256 px passes the submit check (<= 2048) but not this model's limit (2 x 64).
    job_id = await queue.submit({"service": "diffusers", "payload": {**BASE, "width": 256}})
    await worker_for(settings, redis, connector).run()

    job = await queue.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.attempts == 1  # not retried
    assert job.error.startswith("invalid parameter payload.width: 256 is larger")
    assert job.error_category == "invalid_input"


async def test_cancel_reaches_the_pipeline_while_the_lease_keeps_renewing(
    redis, queue: Queue, settings, connector
):
    worker = worker_for(
        settings, redis, connector, burst=False, idle_wait_seconds=60, lease_seconds=2
    )
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        job_id = await queue.submit({"service": "diffusers", "payload": {**BASE, "steps": 150}})

        async def stepping() -> bool:
            events = await job_events(redis, queue, job_id)
            # Any step reported (a backlog of steps is sent as its newest, so not step 1 always).
            return any(e.get("type") == "progress" for e in events)

        await eventually(stepping, within=120)
        # The pipeline runs in a thread: the event loop is free, so the lease renews.
        first = await redis.zscore(queue.keys.leases(), job_id)

        async def renewed() -> bool:
            return (await redis.zscore(queue.keys.leases(), job_id) or 0) > (first or 0)

        await eventually(renewed, within=30)
        assert await queue.cancel(job_id, "enough") in {"claimed", "running"}

        async def idle() -> bool:
            return not worker.running_jobs

        await eventually(idle, within=60)
        job = await queue.get(job_id)
        assert job.status is JobStatus.CANCELLED
        progress = [e for e in await job_events(redis, queue, job_id) if e["type"] == "progress"]
        assert len(progress) < 150
        assert worker.stats.cancelled == 1
    finally:
        worker.stop(force=True)
        await asyncio.wait_for(run, 60)
