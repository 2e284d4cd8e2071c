"""A burst worker drains the queue and returns; the tests then read what is left in Redis."""

from __future__ import annotations

import asyncio
import base64

import pytest
from worker_helpers import job_events, make_worker_settings, queue_backoff

from emp_core.errors import InvalidInput
from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_worker.failures import Classification
from emp_worker.worker import Worker


async def test_burst_worker_runs_jobs_to_completion(redis, queue: Queue, settings):
    ids = await queue.submit_many(
        [{"service": "simulation", "payload": {"steps": 3, "seed": i}} for i in range(5)]
    )
    worker = Worker(make_worker_settings(settings), redis=redis)

    stats = await worker.run()

    assert stats.completed == 5
    assert stats.claims == 6  # five jobs, then one empty claim that ends the burst
    for i, job_id in enumerate(ids):
        job = await queue.get(job_id)
        assert job.status is JobStatus.COMPLETED
        assert job.attempts == 1
        assert job.worker_id == worker.id
        assert job.result["steps"] == 3
        assert job.result["seed"] == i
        head, _, body = job.result["image"].partition(",")
        assert head == "data:image/svg+xml;base64"
        assert base64.b64decode(body).startswith(b"<svg")
        events = await job_events(redis, queue, job_id)
        assert [e["type"] for e in events] == [
            "submitted", "claimed", "progress", "progress", "progress", "completed",
        ]  # fmt: skip
        assert [float(e["progress"]) for e in events if e["type"] == "progress"] == [
            33.33, 66.67, 100.0,
        ]  # fmt: skip
        assert events[2]["message"] == "step 1 of 3"
    # The worker deregistered on the way out.
    assert not await redis.exists(queue.keys.worker(worker.id))
    assert await redis.zscore(queue.keys.workers(), worker.id) is None


async def test_failure_injection_retries_then_succeeds(redis, queue: Queue, settings):
    payload = {"steps": 2, "fail_with": "CUDA out of memory", "fail_times": 2}
    job_id = await queue.submit({"service": "simulation", "payload": payload, "max_attempts": 3})
    worker = Worker(make_worker_settings(settings), redis=redis, classifier=queue_backoff)

    stats = await worker.run()

    job = await queue.get(job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.attempts == 3
    assert job.result["attempt"] == 3
    assert (stats.retried, stats.completed, stats.failed) == (2, 1, 0)
    retries = [e for e in await job_events(redis, queue, job_id) if e["type"] == "retrying"]
    assert [e["error"] for e in retries] == ["CUDA out of memory"] * 2
    assert [e["attempt"] for e in retries] == ["1", "2"]


async def test_dead_letter_after_max_attempts(redis, queue: Queue, settings):
    payload = {"steps": 2, "fail_with": "CUDA out of memory"}  # no fail_times: always
    job_id = await queue.submit({"service": "simulation", "payload": payload, "max_attempts": 2})
    worker = Worker(make_worker_settings(settings), redis=redis, classifier=queue_backoff)

    stats = await worker.run()

    job = await queue.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.attempts == 2
    assert job.error == "CUDA out of memory"
    assert await redis.zscore(queue.keys.dead(), job_id) is not None
    assert (stats.retried, stats.failed, stats.completed) == (1, 1, 0)


async def test_job_timeout_fails_the_job(redis, queue: Queue, settings):
    payload = {"steps": 1000, "step_time": 0.05}  # 50 s of work
    job_id = await queue.submit(
        {"service": "simulation", "payload": payload, "timeout_s": 0.2, "max_attempts": 1}
    )

    stats = await Worker(make_worker_settings(settings), redis=redis).run()

    job = await queue.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == "timed out after 0.2 s"
    assert stats.failed == 1
    progress = [e for e in await job_events(redis, queue, job_id) if e["type"] == "progress"]
    assert len(progress) < 10  # stopped after about four steps, not fifty seconds' worth


async def test_malformed_payload_is_not_retried(redis, queue: Queue, settings):
    job_id = await queue.submit(
        {"service": "simulation", "payload": {"steps": "many"}, "max_attempts": 3}
    )

    await Worker(make_worker_settings(settings), redis=redis).run()

    job = await queue.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.attempts == 1
    assert job.error == "payload.steps must be an integer from 0 to 100000, got 'many'"


async def test_classifier_decides_whether_to_retry(redis, queue: Queue, settings):
    job_id = await queue.submit(
        {"service": "simulation", "payload": {"fail_with": "bad prompt"}, "max_attempts": 3}
    )
    seen: list[str] = []

    def never_retry(message: str) -> Classification:
        seen.append(message)
        return Classification(retryable=False, delay_s=None)

    await Worker(make_worker_settings(settings), redis=redis, classifier=never_retry).run()

    assert seen == ["bad prompt"]
    job = await queue.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 1)


async def test_slots_run_jobs_at_the_same_time(redis, queue: Queue, settings):
    running = 0
    all_in = asyncio.Event()

    class Gathering:
        """Finishes only once three jobs run at once: a worker without three slots would hang."""

        service = "simulation"

        async def run(self, job, ctx):
            nonlocal running
            running += 1
            if running == 3:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), 10)
            return {"ok": True}

    await queue.submit_many([{"service": "simulation"}] * 3)
    worker = Worker(
        make_worker_settings(settings, slots=3), redis=redis, connectors={"simulation": Gathering()}
    )

    stats = await worker.run()

    assert stats.completed == 3


async def test_result_that_is_not_json_fails_the_job(redis, queue: Queue, settings):
    class Unserialisable:
        service = "simulation"

        async def run(self, job, ctx):
            return {"when": object()}

    job_id = await queue.submit({"service": "simulation", "max_attempts": 1})
    connectors = {"simulation": Unserialisable()}

    await Worker(make_worker_settings(settings), redis=redis, connectors=connectors).run()

    job = await queue.get(job_id)
    assert job.status is JobStatus.FAILED
    assert "not JSON" in (job.error or "")


def test_worker_refuses_a_service_without_connector(settings):
    with pytest.raises(InvalidInput, match="no connector serves 'txt2vid'"):
        Worker(make_worker_settings(settings, services=["simulation", "txt2vid"]))
