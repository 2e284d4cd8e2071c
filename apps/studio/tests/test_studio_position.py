"""A waiting job's place in line on its studio page ("3rd in line for sdxl"), kept current over
the page's socket as jobs ahead of it are taken, though none of its own events happen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from studio_helpers import Studio, Visitor, job_form, running_studio
from websockets.asyncio.client import ClientConnection, connect

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import JobSpec
from emp_core.queue.queue import Queue
from emp_core.registry.workers import WorkerRegistry
from emp_core.settings import QueueSettings
from emp_web.testing import Account

SDXL = WorkerCapabilities(worker_id="sdxl-0", services=["sdxl"])


@pytest.fixture
async def quick(settings: QueueSettings, database_url: str) -> AsyncIterator[Studio]:
    async with running_studio(settings, database_url, position_refresh_seconds=0.05) as studio:
        yield studio


async def _recv_until(ws: ClientConnection, text: str) -> str:
    """Messages until one holds ``text`` (bounded by count and a generous per-message wait)."""
    for _ in range(50):
        message = str(await asyncio.wait_for(ws.recv(), 10))
        if text in message:
            return message
    raise AssertionError(f"no message said {text!r}")


async def _claim(queue: Queue) -> str:
    claimed = (await queue.claim(SDXL)).claimed
    assert claimed is not None
    return claimed.id


async def test_a_waiting_job_shows_its_place_and_follows_it(
    quick: Studio, accounts: dict[str, Account], queue: Queue, redis: aioredis.Redis
) -> None:
    alice = quick.visitor()
    await alice.sign_in(accounts["alice"])
    await WorkerRegistry(redis, queue.keys).register(SDXL)
    # Alice's own earlier jobs: with one customer, fair shares (emp_claim) keep submit order.
    mine = JobSpec(service="sdxl", customer_id=accounts["alice"].user_id)
    ahead = [await queue.submit(mine) for _ in range(2)]
    await alice.get("/jobs/new")
    response = await alice.post("/jobs", job_form(service="sdxl"))
    job_id = str(response.headers["location"]).removeprefix("/jobs/")

    page = (await alice.get(f"/jobs/{job_id}")).text
    assert 'data-testid="job-position-rank">3rd in line</strong> for sdxl' in page

    headers = {"Cookie": alice.cookie_header}
    async with connect(
        f"{quick.ws}/ws/jobs/{job_id}", additional_headers=headers, origin=quick.base
    ) as ws:
        await _recv_until(ws, "3rd in line")
        # Jobs ahead are taken: no event of this job happens, its place is pushed all the same.
        assert await _claim(queue) == ahead[0]
        moved = await _recv_until(ws, "2nd in line")
        assert moved.lstrip().startswith('<div id="job-position"')  # only that part is sent
        assert await _claim(queue) == ahead[1]
        await _recv_until(ws, "Next in line")
        # Its own claim: the page's parts again, and no place in line any more.
        assert await _claim(queue) == job_id
        claimed = await _recv_until(ws, 'data-testid="job-status">claimed')
        assert "in line" not in claimed
    await alice.aclose()


async def test_no_live_worker_says_so(alice: Visitor) -> None:
    await alice.get("/jobs/new")
    response = await alice.post("/jobs", job_form(service="sdxl"))
    page = (await alice.get(str(response.headers["location"]))).text
    assert 'data-testid="job-position-reason">No live worker can run this job.' in page
