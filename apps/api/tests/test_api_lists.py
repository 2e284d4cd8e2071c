"""Job lists over several queues (issue 13 item 2): ``GET /api/jobs`` and the admin's merged view
page through every queue of the deployment newest first, each job exactly once, with filters and
the archive for jobs Redis has forgotten; a cursor that is not one the API returned is a 422."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_helpers import Api, job_body, running_api

from emp_core.queue.queue import Queue
from emp_core.queue.queues import Queues
from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, JobArchiveRepository, Role, archive_row
from emp_sql.auth import Principal
from emp_web.testing import Account

# Three queues: ``simulation`` and ``render`` each to a queue of its own, ``other`` to the home one.
SERVICES = ["simulation", "render", "other", "render", "simulation", "other", "simulation"]


@pytest.fixture
def three(settings: QueueSettings) -> QueueSettings:
    q = settings.queue
    routes = {"simulation": f"{q}-sim", "render": f"{q}-render"}
    return settings.model_copy(update={"queue_routes": routes})


@pytest.fixture
async def api3(three: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    async with running_api(three, database_url) as running:
        yield running


async def _submit(api: Api, who: Account, services: list[str]) -> list[str]:
    """Submit one job per service, in order, a few ms apart (the merge orders by submit time,
    in ms); returns the ids."""
    ids = []
    for n, service in enumerate(services):
        body = job_body(service=service, payload={"n": n})
        response = await api.http.post("/api/jobs", json=body, headers=who.headers)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
        await asyncio.sleep(0.003)
    return ids


async def _pages(api: Api, who: Account, **params: Any) -> tuple[list[str], list[str | None]]:
    """Every page of ``GET /api/jobs``: the ids in the order listed, and the cursors returned."""
    seen: list[str] = []
    cursors: list[str | None] = []
    cursor = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = await api.http.get("/api/jobs", params=query, headers=who.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        cursors.append(cursor)
        if cursor is None:
            return seen, cursors
        assert len(cursors) < 50, "the listing does not end"


async def test_pages_span_every_queue_newest_first(
    api3: Api, three: QueueSettings, accounts: dict[str, Account], redis
) -> None:
    alice, bob = accounts["alice"], accounts["bob"]
    ids = await _submit(api3, alice, SERVICES)
    theirs = await _submit(api3, bob, ["render", "other"])
    for queue in three.queue_names:  # the jobs really are spread over the three queues
        assert await redis.zcard(Queue(redis, three.model_copy(update={"queue": queue})).keys
                                 .customer_jobs(alice.user_id)) > 0  # fmt: skip

    for limit in (1, 2, 3, 50):
        seen, cursors = await _pages(api3, alice, limit=limit)
        assert seen == ids[::-1], limit
    seen, cursors = await _pages(api3, alice, limit=2)
    assert all(":" in c for c in cursors[:-1])  # one position per queue
    assert len(cursors) == 4
    # An admin lists bob's, also across queues.
    seen, _ = await _pages(api3, accounts["admin"], limit=1, customer_id=bob.user_id)
    assert seen == theirs[::-1]


async def test_filters_across_queues(api3: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    ids = await _submit(api3, alice, SERVICES)
    cancelled = [ids[0], ids[3], ids[5]]  # one in each queue
    for job_id in cancelled:
        response = await api3.http.post(f"/api/jobs/{job_id}/cancel", headers=alice.headers)
        assert response.status_code == 200
    for limit in (1, 2):
        seen, _ = await _pages(api3, alice, limit=limit, status="cancelled")
        assert seen == cancelled[::-1]
        seen, _ = await _pages(api3, alice, limit=limit, service="simulation")
        assert seen == [ids[6], ids[4], ids[0]]
        seen, _ = await _pages(api3, alice, limit=limit, service="render", status="pending")
        assert seen == [ids[1]]
    none, _ = await _pages(api3, alice, service="nothing-here")
    assert none == []


async def test_forgotten_jobs_come_from_the_archive_in_their_place(
    api3: Api, three: QueueSettings, accounts: dict[str, Account], redis, database_url: str
) -> None:
    alice = accounts["alice"]
    ids = await _submit(api3, alice, SERVICES)
    queues = Queues(redis, three)
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        # Redis retention ran out for ids[1] (render) and ids[4] (simulation) after they were
        # archived; ids[2] (home queue) was purged from both: the listing passes over it.
        for job_id in (ids[1], ids[4], ids[2]):
            queue = await queues.locate(job_id)
            if job_id != ids[2]:
                job = await queue.get(job_id)
                row = archive_row(job, seq=None, queue=queue.keys.queue)
                async with db.session() as session:
                    await JobArchiveRepository(session).upsert([row])
            await redis.delete(queue.keys.job(job_id))
    finally:
        await db.dispose()
    expected = [i for i in ids[::-1] if i != ids[2]]
    for limit in (1, 2, 4):
        seen, _ = await _pages(api3, alice, limit=limit)
        assert seen == expected, limit
    seen, _ = await _pages(api3, alice, limit=1, service="render")
    assert seen == [ids[3], ids[1]]


async def test_the_admins_merged_view_spans_every_queue(
    api3: Api, accounts: dict[str, Account]
) -> None:
    alice, bob, admin = accounts["alice"], accounts["bob"], accounts["admin"]
    order: list[str] = []
    for who, service in [(alice, "render"), (bob, "simulation"), (bob, "other"),
                         (alice, "simulation"), (bob, "render"), (alice, "other")]:  # fmt: skip
        order += await _submit(api3, who, [service])
    viewer = Principal(admin.user_id, admin.email, Role.ADMIN, admin.token_id)
    catalog = api3.services.catalog
    for limit in (1, 2, 4):
        seen: list[str] = []
        cursor = None
        while True:
            page = await catalog.list_merged(
                viewer, [alice.user_id, bob.user_id], limit=limit, cursor=cursor
            )
            seen += [j.id for j in page.jobs]
            if (cursor := page.next_cursor) is None:
                break
        assert seen == order[::-1], limit
    page = await catalog.list_merged(
        viewer, [alice.user_id, bob.user_id], service="render", limit=10
    )
    assert [j.id for j in page.jobs] == [order[4], order[0]]


async def test_a_cursor_the_api_did_not_return_is_422(
    api3: Api, three: QueueSettings, accounts: dict[str, Account]
) -> None:
    headers = accounts["alice"].headers
    await _submit(api3, accounts["alice"], SERVICES)
    first = (await api3.http.get("/api/jobs", params={"limit": 2}, headers=headers)).json()
    good = first["next_cursor"]
    bad = {
        "x": "pattern",
        "12": "one-queue cursor",
        "nope:12": "queue nope",
        f"{three.queue}:5,{three.queue}:4": "twice",
        good + ",": "pattern",
        "a" * 5000: "at most",
    }
    for cursor, said in bad.items():
        response = await api3.http.get("/api/jobs", params={"cursor": cursor}, headers=headers)
        assert response.status_code == 422, (cursor, response.text)
        error = response.json()["error"]
        assert error["field"] == "cursor", error
        assert said in error["message"], error
    assert (await api3.http.get("/api/jobs", params={"cursor": good}, headers=headers)).is_success


async def test_one_queue_keeps_its_numeric_cursor(api: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    ids = await _submit(api, alice, ["simulation"] * 3)
    seen, cursors = await _pages(api, alice, limit=1)
    assert seen == ids[::-1]
    assert all(c.isdigit() for c in cursors if c is not None)
    named = await api.http.get("/api/jobs", params={"cursor": "elsewhere:3"}, headers=alice.headers)
    assert (named.status_code, named.json()["error"]["field"]) == (422, "cursor")
