"""EMP as the harness drives it: ``Queue.submit`` / ``submit_many`` from the workspace, and the
worker CLI (``emp-worker --service noop --slots 10``, see ``emp_worker_cli.py``)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from redis.asyncio import Redis

from bench.peers.harness import ROOT
from emp_core.queue.queue import Queue
from emp_core.redis.client import connect
from emp_core.settings import QueueSettings

QUEUE = "bench"
SLOTS = 10
_JOB: dict[str, Any] = {"service": "noop", "payload": {}}
_BATCH = 1000


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False)  # fmt: skip
    return out.stdout.strip() or "?"


class EmpSystem:
    name = "EMP"
    bulk_how = "submit_many, 1,000 a call"

    def __init__(self) -> None:
        self.version = _commit()
        self.url = ""
        self._redis: Redis | None = None
        self._queue: Queue | None = None

    @property
    def queue(self) -> Queue:
        assert self._queue is not None, "open() first"
        return self._queue

    async def open(self, url: str) -> None:
        self.url = url
        self._redis = connect(url)
        self._queue = Queue(self._redis, QueueSettings(redis_url=url, queue=QUEUE))

    async def reset(self) -> None:
        await self.queue.functions.load()  # FLUSHALL took the library too

    async def enqueue(self) -> None:
        await self.queue.submit(_JOB)

    async def enqueue_bulk(self, n: int) -> None:
        for start in range(0, n, _BATCH):
            await self.queue.submit_many([_JOB] * min(_BATCH, n - start))

    def worker_command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "bench.peers.emp_worker_cli", "--service", "noop",
                "--slots", str(SLOTS), "--queue", QUEUE, "--redis-url", self.url,
                "--worker-id", f"bench-{index}"]  # fmt: skip

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


SYSTEM = EmpSystem()
