"""arq as the harness drives it: ``enqueue_job`` (it has no batch call: 1,000 at a time with
``asyncio.gather``) and its CLI, ``arq MODULE.WorkerSettings`` with 10 jobs at once. arq polls
Redis for work; its default ``poll_delay`` of 0.5 s would make the drain a measure of that
sleep, so it polls every 5 ms here."""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.peers.harness import Stateless
from bench.peers.record import record


async def noop(ctx: dict[str, Any]) -> None:
    record()


class WorkerSettings:
    functions = [noop]  # noqa: RUF012 - arq reads class attributes
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
    max_jobs = 10
    poll_delay = 0.005


class ArqSystem(Stateless):
    name = "arq"
    version = version("arq")
    bulk_how = "enqueue_job ×1,000 gathered"

    def __init__(self) -> None:
        self.pool: ArqRedis | None = None

    async def open(self, url: str) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(url))

    async def enqueue(self) -> None:
        assert self.pool is not None
        await self.pool.enqueue_job("noop")

    async def enqueue_bulk(self, n: int) -> None:
        assert self.pool is not None
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(self.pool.enqueue_job("noop") for _ in range(min(1000, n - start)))
            )

    def worker_command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "arq", f"{__name__}.WorkerSettings"]

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()


SYSTEM = ArqSystem()
