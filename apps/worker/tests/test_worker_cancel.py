"""Cancelling a running job reaches its worker at once and stops the connector (over both
transports: ``test_worker_transports.py``); here, the races of the Redis path."""

from __future__ import annotations

import asyncio

from worker_helpers import Watched, make_worker_settings

from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_worker.worker import Worker


async def test_a_cancel_that_overtakes_the_claim_reply_still_stops_the_job(
    redis, queue: Queue, settings
):
    connector = Watched()
    worker = Worker(
        make_worker_settings(settings), redis=redis, connectors={"simulation": connector}
    )
    job_id = await queue.submit({"service": "simulation", "payload": {"steps": 1000}})
    # The control message arrives before the slot has the job: it is remembered.
    worker._on_control({"type": "cancel", "job_id": job_id, "reason": "too late"})

    stats = await worker.run()

    assert stats.cancelled == 1
    assert stats.completed == 0
    assert not connector.started.is_set()  # stopped before its first step


async def test_a_swallowed_cancellation_is_repeated_until_the_connector_stops(
    redis, queue: Queue, settings
):
    # On Python 3.11 a cancellation can be lost inside a Redis call (python/cpython#86296);
    # here the connector loses the first one on purpose.
    swallowed = asyncio.Event()
    cancelled = asyncio.Event()

    class Stubborn:
        service = "simulation"

        async def run(self, job, ctx):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                swallowed.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    job_id = await queue.submit({"service": "simulation", "timeout_s": 0.1, "max_attempts": 1})
    worker = Worker(
        make_worker_settings(settings), redis=redis, connectors={"simulation": Stubborn()}
    )

    await asyncio.wait_for(worker.run(), 10)

    assert swallowed.is_set()
    assert cancelled.is_set()
    job = await queue.get(job_id)
    assert (job.status, job.error) == (JobStatus.FAILED, "timed out after 0.1 s")
