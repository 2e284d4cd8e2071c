"""Celery as the harness drives it: ``task.delay()``, ``group(...).apply_async()`` and its CLI,
``celery worker`` with the thread pool of 10 (one process; the default prefork pool would be
10 processes) and no result backend."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

from celery import Celery, group

from bench.peers.harness import Stateless
from bench.peers.record import record

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.task_default_queue = "bench"


@app.task(ignore_result=True)
def noop() -> None:
    record()


class CelerySystem(Stateless):
    name = "Celery"
    version = version("celery")
    bulk_how = "group(...).apply_async()"

    async def enqueue(self) -> None:
        noop.delay()

    async def enqueue_bulk(self, n: int) -> None:
        for start in range(0, n, 1000):
            group(noop.s() for _ in range(min(1000, n - start))).apply_async()

    def worker_command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", __name__, "worker", "--pool", "threads",
                "--concurrency", "10", "--hostname", f"bench{index}@%h"]  # fmt: skip


SYSTEM = CelerySystem()
