"""A worker outlives a Redis restart: it reconnects, loads the Function library again (a server
without persistence comes back empty), registers again and takes new jobs."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from worker_helpers import eventually, make_worker_settings

from emp_core.jobs.job import JobStatus
from emp_core.queue.functions import Functions
from emp_core.queue.queue import Queue
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings
from emp_worker.worker import Worker


@pytest.mark.parametrize("loader", ["worker", "another process"])
async def test_worker_survives_a_redis_restart(tmp_path, loader):
    """``loader``: who loads the library into the restarted Redis. Another process (the API, a
    second worker, this worker's own reaper) can be first, and then no slot of this worker meets
    "function not found" (an idle slot's next claim even reconnects without an error): it must
    register again all the same."""
    server = RedisServer(tmp_path / "redis").start()
    settings = QueueSettings(redis_url=server.url, queue=f"t{uuid.uuid4().hex[:12]}")
    client = aioredis.Redis.from_url(server.url)
    queue = Queue(client, settings)
    # A refresh interval longer than the test: only the prompt re-registration after the lost
    # wake-up subscription can put the worker back in the registry in time.
    worker = Worker(
        make_worker_settings(
            settings, burst=False, idle_wait_seconds=0.5, registry_refresh_seconds=60
        )
    )
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        first = await queue.submit({"service": "simulation"})
        await eventually(_completed(queue, first), within=5)

        server.kill()
        server = RedisServer(tmp_path / "redis", port=server.port).start()

        functions = Functions(client, queue.keys)
        if loader == "another process":
            await eventually(_load(functions), within=20, every=0.05)
        await eventually(_library_loaded(functions), within=20, every=0.1)
        second = await queue.submit({"service": "simulation"})
        await eventually(_completed(queue, second), within=20)
        await eventually(_registered(client, queue, worker.id), within=10, every=0.1)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 20)
        await client.aclose()
        server.stop()


def _completed(queue: Queue, job_id: str):
    async def check() -> bool:
        return (await queue.get(job_id)).status is JobStatus.COMPLETED

    return check


def _registered(client: aioredis.Redis, queue: Queue, worker_id: str):
    async def check() -> bool:
        return bool(await client.exists(queue.keys.worker(worker_id)))

    return check


def _load(functions: Functions):
    async def check() -> bool:
        try:
            await functions.load()
        except (aioredis.ConnectionError, OSError):
            return False
        return True

    return check


def _library_loaded(functions: Functions):
    async def check() -> bool:
        try:
            return await functions.installed_version() is not None
        except (aioredis.ConnectionError, OSError):
            return False

    return check
