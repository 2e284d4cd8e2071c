"""The API over several queues (issue 13 item 2): a submit goes to its service's queue
(``EMP_QUEUE_ROUTES``); reading, cancelling and following a job find it in whichever queue holds
it; the admin's queue view sums every queue; the archive projector archives every queue's jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from api_helpers import Api, job_body, running_api
from sqlalchemy import select
from websockets.asyncio.client import connect

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_sql import ArchivedJob, Database, DatabaseSettings
from emp_web.testing import Account, claim


@pytest.fixture
async def api2(routed: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    async with running_api(routed, database_url) as running:
        yield running


async def test_a_routed_job_is_submitted_read_followed_and_archived(
    api2: Api, routed: QueueSettings, accounts: dict[str, Account], redis, database_url: str
) -> None:
    alice = accounts["alice"]
    home = Queue(redis, routed)
    sim = Queue(redis, routed.model_copy(update={"queue": routed.queue_for("simulation")}))
    job = (await api2.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    assert await redis.exists(sim.keys.job(job["id"])) == 1
    assert await redis.exists(home.keys.job(job["id"])) == 0

    got = await api2.http.get(f"/api/jobs/{job['id']}", headers=alice.headers)
    assert (got.status_code, got.json()["status"]) == (200, "pending")
    state = (await api2.http.get("/api/queue", headers=accounts["admin"].headers)).json()
    assert [(s["service"], s["pending"]) for s in state["services"]] == [("simulation", 1)]

    claimed = await claim(sim)
    assert claimed.id == job["id"]
    async with connect(f"{api2.ws}/ws/jobs/{job['id']}", additional_headers=alice.headers) as ws:
        replayed = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        assert [e["type"] for e in replayed] == ["submitted", "claimed"]
        await sim.complete(claimed, {"ok": 1})
        live = orjson.loads(await asyncio.wait_for(ws.recv(), 5))  # heard on sim's channel
        assert live["type"] == "completed"

    db = Database(DatabaseSettings(database_url=database_url))
    try:
        for _ in range(100):  # the projector of the sim queue archives it
            async with db.session() as session:
                rows = await session.execute(
                    select(ArchivedJob).where(ArchivedJob.job_id == job["id"])
                )
                archived = list(rows.scalars())
            if archived:
                break
            await asyncio.sleep(0.05)
        assert [(a.status, a.queue) for a in archived] == [("completed", sim.keys.queue)]
    finally:
        await db.dispose()


async def test_cancel_finds_the_job_in_its_queue(
    api2: Api, routed: QueueSettings, accounts: dict[str, Account], redis
) -> None:
    alice = accounts["alice"]
    job = (await api2.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    cancel = await api2.http.post(f"/api/jobs/{job['id']}/cancel", headers=alice.headers)
    assert (cancel.status_code, cancel.json()["status"]) == (200, "cancelled")
    missing = await api2.http.get("/api/jobs/nope", headers=alice.headers)
    assert missing.status_code == 404
