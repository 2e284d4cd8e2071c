"""The archive projector: finished jobs reach SQL once, from any number of projectors, and the
API keeps answering for them after Redis has forgotten them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from api_helpers import Api, job_body, running_api
from sqlalchemy import func, select
from webhook_helpers import eventually

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_sql import ArchivedJob, Database, DatabaseSettings
from emp_sql.archive import ArchiveProjector
from emp_web.testing import Account, claim


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(DatabaseSettings(database_url=database_url))
    yield db
    await db.dispose()


async def _archived(db: Database, job_id: str) -> list[ArchivedJob]:
    async with db.session() as session:
        rows = await session.execute(select(ArchivedJob).where(ArchivedJob.job_id == job_id))
        return list(rows.scalars())


async def _finish(queue: Queue, result: object = None) -> str:
    claimed = await claim(queue)
    await queue.complete(claimed, result)
    return claimed.id


async def test_projection_is_idempotent_across_projectors(queue: Queue, database: Database) -> None:
    await queue.submit({"service": "simulation", "customer_id": "c1"})
    job_id = await _finish(queue, {"ok": True})
    projectors = [ArchiveProjector(queue, database) for _ in range(3)]
    written = await asyncio.gather(*(p.project([job_id, job_id]) for p in projectors))
    assert written == [1, 1, 1]
    await projectors[0].project([job_id])
    rows = await _archived(database, job_id)
    assert len(rows) == 1
    assert (rows[0].status, rows[0].customer_id, rows[0].data["result"]) == (
        "completed", "c1", {"ok": True},
    )  # fmt: skip


async def test_one_leader_at_a_time(queue: Queue, database: Database) -> None:
    first = ArchiveProjector(queue, database, lease_seconds=30)
    second = ArchiveProjector(queue, database, lease_seconds=30)
    assert await first.lease.acquire_or_renew()
    assert not await second.lease.acquire_or_renew()
    assert await first.lease.acquire_or_renew()  # renewing keeps it
    await first.lease.release()
    assert await second.lease.acquire_or_renew()
    # The holder dies without releasing: its lease runs out (deleted here rather than waited for).
    await queue.redis.delete(queue.keys.archive_leader())
    assert await first.lease.acquire_or_renew()
    assert not await second.lease.acquire_or_renew()  # the old leader notices it lost the lead


async def test_a_stopped_projector_gives_up_the_lead(queue: Queue, database: Database) -> None:
    leader = ArchiveProjector(queue, database, lease_seconds=30)
    standby = ArchiveProjector(queue, database, lease_seconds=30)
    task = asyncio.create_task(leader.run(poll_seconds=0.05))

    async def leading() -> bool:
        return leader.leading

    await eventually(leading)
    assert not await standby.lease.acquire_or_renew()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Released on stop: the standby takes over now, not after the 30 s lease.
    assert await queue.redis.exists(queue.keys.archive_leader()) == 0
    assert await standby.lease.acquire_or_renew()


async def test_catch_up_finds_what_no_projector_saw(
    settings: QueueSettings,
    database_url: str,
    accounts: dict[str, Account],
    queue: Queue,
    database: Database,
) -> None:
    alice = accounts["alice"]
    # An API with no projector running: the terminal event below is heard by no one.
    async with running_api(settings, database_url, run_projector=False) as api:
        job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
        pending = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    await _finish(queue)
    # Jobs submitted without the API (CLI, Python) reach the archive the same way.
    direct = await queue.submit({"service": "simulation", "customer_id": "c-direct"})
    await queue.cancel(direct)
    assert await _archived(database, job["id"]) == []
    assert await queue.redis.zcard(queue.keys.finished()) == 2

    standby = ArchiveProjector(queue, database)
    assert await standby.catch_up() == 2
    assert len(await _archived(database, job["id"])) == 1
    assert len(await _archived(database, direct)) == 1
    assert await _archived(database, pending["id"]) == []
    assert await queue.redis.zcard(queue.keys.finished()) == 0
    assert await standby.catch_up() == 0


async def test_live_projection_and_reads_after_redis_forgets(
    api: Api, accounts: dict[str, Account], queue: Queue, database: Database
) -> None:
    alice, bob = accounts["alice"], accounts["bob"]
    job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    await _finish(queue, {"images": ["a.png"]})
    for _ in range(100):  # the API's projector follows the events channel
        if await _archived(database, job["id"]):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the job never reached the archive")

    # Redis retention runs out: the job's hash and stream are gone.
    await queue.redis.delete(queue.keys.job(job["id"]), queue.keys.events(job["id"]))
    got = await api.http.get(f"/api/jobs/{job['id']}", headers=alice.headers)
    assert (got.status_code, got.json()["result"]) == (200, {"images": ["a.png"]})
    assert (await api.http.get(f"/api/jobs/{job['id']}", headers=bob.headers)).status_code == 404
    listed = (await api.http.get("/api/jobs", headers=alice.headers)).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    cancel = await api.http.post(f"/api/jobs/{job['id']}/cancel", headers=alice.headers)
    assert cancel.status_code == 409
    async with database.session() as session:
        total = await session.scalar(
            select(func.count()).select_from(ArchivedJob).where(ArchivedJob.job_id == job["id"])
        )
    assert total == 1
