"""SAQ as the harness drives it: ``Queue.enqueue`` (no batch call: 1,000 at a time with
``asyncio.gather``) and its CLI, ``saq MODULE.settings`` with 10 jobs at once."""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version
from typing import Any

from saq import Queue

from bench.peers.harness import Stateless
from bench.peers.record import record


async def noop(ctx: dict[str, Any]) -> None:
    record()


settings = {
    "queue": Queue.from_url(os.environ["BENCH_REDIS_URL"], name="bench"),
    "functions": [noop],
    "concurrency": 10,
}


class SaqSystem(Stateless):
    name = "SAQ"
    version = version("saq")
    bulk_how = "enqueue ×1,000 gathered"

    def __init__(self) -> None:
        self.queue: Queue | None = None

    async def open(self, url: str) -> None:
        self.queue = Queue.from_url(url, name="bench")
        await self.queue.connect()

    async def enqueue(self) -> None:
        assert self.queue is not None
        await self.queue.enqueue("noop")

    async def enqueue_bulk(self, n: int) -> None:
        assert self.queue is not None
        for start in range(0, n, 1000):
            await asyncio.gather(*(self.queue.enqueue("noop") for _ in range(min(1000, n - start))))

    def worker_command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "saq", f"{__name__}.settings", "--quiet"]

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.disconnect()


SYSTEM = SaqSystem()
