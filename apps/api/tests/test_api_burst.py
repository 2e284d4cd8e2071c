"""200 sockets opened at once on one job in one API process, with a Redis pool far smaller than
that: none is refused, every one gets every event exactly once and closes with 1000 (issue 12,
defect 1: the pool of 100 raised "Too many connections" and 100 sockets were answered 503)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from api_helpers import claim, create_account, job_body, running_api
from websockets.asyncio.client import connect

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings

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
    small_pool = settings.model_copy(update={"redis_max_connections": 8})
    async with running_api(small_pool, database_url) as api:
        job = (await api.http.post("/api/jobs", json=job_body(), headers=user.headers)).json()
        url = f"{api.ws}/ws/jobs/{job['id']}"
        opened = [asyncio.Event() for _ in range(SOCKETS)]
        tasks = [asyncio.create_task(_follow(url, user.headers, e)) for e in opened]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 120)
        claimed = await claim(queue)
        await queue.progress(claimed, 50, "half way")
        await queue.complete(claimed, {"text": "done"})
        results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    assert len(results) == SOCKETS
    assert all(r == ["submitted", "claimed", "progress", "completed"] for r in results), {
        tuple(r) for r in results
    }
