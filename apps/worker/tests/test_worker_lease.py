"""Leases are renewed from a thread: a connector that blocks the event loop keeps its job. (A
renewal refused because the job was reassigned stops the connector: ``test_worker_transports.py``,
over both transports.)"""

from __future__ import annotations

import threading
import time

import redis as sync_redis
from worker_helpers import make_worker_settings

from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_worker.worker import Worker

LEASE = 0.6


class Blocking:
    """Blocks the event loop, like a synchronous GPU call, for several leases."""

    service = "simulation"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def run(self, job, ctx):
        time.sleep(self.seconds)  # noqa: ASYNC251 - blocking the loop is the point of this test
        return {"slept": self.seconds}


class Reaper(threading.Thread):
    """Runs the reaper from outside the (blocked) event loop, as other workers would."""

    def __init__(self, url: str, queue: Queue) -> None:
        super().__init__(daemon=True)
        self.client = sync_redis.Redis.from_url(url)
        self.keys = queue.keys
        self.settings = queue.settings
        self.stop = threading.Event()
        self.runs = 0
        self.requeued = 0

    def run(self) -> None:
        k = self.keys
        while not self.stop.wait(0.05):
            requeued, _, _, _ = self.client.fcall(
                "emp_reap", 5, k.leases(), k.delayed(), k.dead(), k.finished(), k.reaper_lock(),
                k.base, 1000, self.settings.retention_seconds, self.settings.events_maxlen,
                self.settings.max_lost_leases, 0, "test",
            )  # fmt: skip
            self.runs += 1
            self.requeued += int(requeued)
        self.client.close()


async def test_a_connector_blocking_the_event_loop_keeps_its_lease(redis, queue: Queue, settings):
    job_id = await queue.submit({"service": "simulation"})
    worker = Worker(
        make_worker_settings(settings, lease_seconds=LEASE),
        redis=redis,
        connectors={"simulation": Blocking(4 * LEASE)},
    )
    reaper = Reaper(settings.redis_url, queue)
    reaper.start()
    try:
        stats = await worker.run()
    finally:
        reaper.stop.set()
        reaper.join(5)

    # Bounded work, not wall-clock: the reaper ran during the job and never found the lease
    # expired, because the lease thread issued a renewal for each lease the block outlasted.
    assert reaper.runs >= 1
    assert reaper.requeued == 0
    assert worker.lease_renewals >= 3
    job = await queue.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 1)
    assert stats.completed == 1
