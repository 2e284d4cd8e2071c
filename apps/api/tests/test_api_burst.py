"""200 sockets opened at once on one job in one API process, with a Redis pool far smaller than
that: none is refused, every one gets every event exactly once and closes with 1000 (issue 12,
defect 1: the pool of 100 raised "Too many connections" and 100 sockets were answered 503)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from api_helpers import job_body, running_api
from websockets.asyncio.client import connect

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_web.testing import create_account, crowd, small_pool

SOCKETS = 200


async def _follow(url: str, headers: dict[str, str], opened: asyncio.Event) -> list[Any]:
    async with connect(url, additional_headers=headers, open_timeout=60) as ws:
        events = [orjson.loads(await asyncio.wait_for(ws.recv(), 60))]
        opened.set()
        events += [orjson.loads(message) async for message in ws]
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
        return [e["type"] for e in events]


async def test_200_sockets_on_one_job_all_get_every_event(
    settings: QueueSettings, database_url: str, queue: Queue
) -> None:
    user = await create_account(database_url, name="crowd")
    async with running_api(small_pool(settings), database_url) as api:
        job = (await api.http.post("/api/jobs", json=job_body(), headers=user.headers)).json()
        url = f"{api.ws}/ws/jobs/{job['id']}"
        results = await crowd(lambda opened: _follow(url, user.headers, opened), queue, SOCKETS)
    assert len(results) == SOCKETS
    assert all(r == ["submitted", "claimed", "progress", "completed"] for r in results), {
        tuple(r) for r in results
    }
