"""The studio over several queues (issue 13 item 2): a job submitted from the studio goes to its
service's queue, its page shows its events from that queue, and the dashboard sums every queue's
depth and lists every queue's workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from studio_helpers import Studio, Visitor, job_form, running_studio

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.registry.workers import WorkerRegistry
from emp_core.settings import QueueSettings
from emp_web.testing import Account, claim


@pytest.fixture
async def studio2(routed: QueueSettings, database_url: str) -> AsyncIterator[Studio]:
    async with running_studio(routed, database_url) as running:
        yield running


async def test_a_routed_job_in_the_studio(
    studio2: Studio, routed: QueueSettings, accounts: dict[str, Account], redis
) -> None:
    sim = Queue(redis, routed.model_copy(update={"queue": routed.queue_for("simulation")}))
    admin: Visitor = studio2.visitor()
    try:
        await admin.sign_in(accounts["admin"])
        await admin.get("/jobs/new")
        response = await admin.post("/jobs", job_form())
        job_id = str(response.headers["location"]).removeprefix("/jobs/")
        assert await redis.exists(sim.keys.job(job_id)) == 1

        caps = WorkerCapabilities(worker_id="sim-only", services=["simulation"])
        await WorkerRegistry(redis, sim.keys).register(caps)  # a worker of the sim queue alone
        dashboard = (await admin.get("/")).text
        assert 'data-testid="stat-pending">1<' in dashboard  # the sim queue's job counted
        assert "sim-only" in dashboard

        await claim(sim)
        page = await admin.get(f"/jobs/{job_id}")
        assert page.status_code == 200
        # The timeline comes from the job's events, read from its own queue: only the claimed
        # event names the attempt (a timeline rebuilt from the record does not).
        assert "(attempt 1)" in page.text
    finally:
        await admin.aclose()
