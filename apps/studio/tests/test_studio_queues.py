"""The studio over several queues (issue 13 item 2): a job submitted from the studio goes to its
service's queue, its page shows its events from that queue, and the dashboard sums every queue's
depth and lists every queue's workers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from studio_helpers import Studio, Visitor, job_form, running_studio

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.queue.queues import Queues
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


def _listed(page: str) -> tuple[list[str], str | None]:
    """The job ids of a jobs page, and its "Older" link."""
    older = re.search(r'href="([^"]+)" data-testid="older"', page)
    ids = re.findall(r'data-job-id="([0-9a-f]+)"', page)
    return ids, older.group(1).replace("&amp;", "&") if older else None


async def _all_pages(visitor: Visitor, url: str | None) -> list[str]:
    seen: list[str] = []
    while url:
        response = await visitor.get(url)
        assert response.status_code == 200, response.text
        ids, url = _listed(response.text)
        seen += ids
    return seen


async def test_the_jobs_pages_span_every_queue(
    settings: QueueSettings, database_url: str, accounts: dict[str, Account], redis
) -> None:
    q = settings.queue
    three = settings.model_copy(
        update={"queue_routes": {"simulation": f"{q}-sim", "render": f"{q}-render"}}
    )
    queues = Queues(redis, three)
    await queues.default.functions.load()
    alice, bob = accounts["alice"], accounts["bob"]
    order: list[tuple[str, str]] = []  # (owner, id), oldest first
    for who, service in [(alice, "render"), (bob, "simulation"), (alice, "other"),
                         (alice, "simulation"), (bob, "render"), (alice, "render"),
                         (bob, "other")]:  # fmt: skip
        spec = {"service": service, "payload": {}, "customer_id": who.user_id}
        order.append((who.user_id, await queues.submit(spec)))
        await asyncio.sleep(0.003)  # the merge orders by submit time, in ms
    newest = [job_id for _, job_id in reversed(order)]
    async with running_studio(three, database_url) as studio:
        studio.app.state.services.settings.page_size = 2
        me, admin = studio.visitor(), studio.visitor()
        try:
            await me.sign_in(alice)
            await admin.sign_in(accounts["admin"])
            mine = [job_id for owner, job_id in reversed(order) if owner == alice.user_id]
            assert await _all_pages(me, "/jobs") == mine
            assert await _all_pages(admin, "/jobs") == newest  # everyone's, merged
            renders = [i for i in newest if i in {order[0][1], order[4][1], order[5][1]}]
            assert await _all_pages(admin, "/jobs?service=render") == renders
            first = (await admin.get("/jobs")).text
            _, older = _listed(first)
            assert older is not None
            assert "%3A" in older  # name:n, one position per queue
            unknown = await admin.get("/jobs?cursor=nowhere%3A3")
            assert unknown.status_code == 422
            assert "nowhere" in unknown.text
        finally:
            await me.aclose()
            await admin.aclose()
