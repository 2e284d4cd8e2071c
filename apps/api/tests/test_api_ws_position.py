"""A pending job's place in line pushed over its WebSocket (``?position=1``): at the start and
each time it moves, though the moves come from other jobs' claims, not from its own events; a
plain socket gets job events only."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis.asyncio as aioredis
from api_helpers import job_body, running_api
from websockets.asyncio.client import ClientConnection, connect

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import JobSpec
from emp_core.queue.queue import Queue
from emp_core.registry.workers import WorkerRegistry
from emp_core.settings import QueueSettings
from emp_web.testing import Account

SDXL = WorkerCapabilities(worker_id="sdxl-0", services=["sdxl"])


async def _next(ws: ClientConnection) -> dict[str, Any]:
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))


async def _claim(queue: Queue) -> str:
    claimed = (await queue.claim(SDXL)).claimed
    assert claimed is not None
    return claimed.id


async def test_the_place_in_line_is_pushed_as_it_moves(
    settings: QueueSettings,
    database_url: str,
    accounts: dict[str, Account],
    queue: Queue,
    redis: aioredis.Redis,
) -> None:
    alice = accounts["alice"]
    await WorkerRegistry(redis, queue.keys).register(SDXL)
    # Alice's own earlier jobs: with one customer, fair shares (emp_claim) keep submit order.
    mine = JobSpec(service="sdxl", customer_id=alice.user_id)
    ahead = [await queue.submit(mine) for _ in range(2)]
    async with running_api(settings, database_url, ws_position_seconds=0.05) as api:
        body = job_body(service="sdxl")
        job = (await api.http.post("/api/jobs", json=body, headers=alice.headers)).json()
        url = f"{api.ws}/ws/jobs/{job['id']}?position=1"
        async with connect(url, additional_headers=alice.headers) as ws:
            assert (await _next(ws))["type"] == "submitted"
            first = await _next(ws)
            assert (first["type"], first["job_id"], first["rank"]) == ("position", job["id"], 2)
            assert first["eligible_workers"] == []  # which workers: for admins only
            assert await _claim(queue) == ahead[0]
            # Only changes are sent: the next message is the new place, however many looks.
            assert (await _next(ws))["rank"] == 1
            assert await _claim(queue) == ahead[1]
            assert (await _next(ws))["rank"] == 0
            assert await _claim(queue) == job["id"]
            assert (await _next(ws))["type"] == "claimed"

        # Without ?position=1 the same socket carries job events only.
        async with connect(f"{api.ws}/ws/jobs/{job['id']}", additional_headers=alice.headers) as ws:
            types = [(await _next(ws))["type"] for _ in range(2)]
            assert types == ["submitted", "claimed"]
