"""Dramatiq as the harness drives it: ``actor.send()``, ``group(...).run()`` and its CLI with one
process of 10 threads (``dramatiq MODULE --processes 1 --threads 10``) per worker process.
Imported by the driver and, as the task module, by the CLI: the broker comes from the
environment."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.harness import Stateless
from bench.peers.record import record

dramatiq.set_broker(RedisBroker(url=os.environ["BENCH_REDIS_URL"]))


@dramatiq.actor(queue_name="bench")
def noop() -> None:
    record()


class DramatiqSystem(Stateless):
    name = "Dramatiq"
    version = version("dramatiq")
    bulk_how = "group(...).run()"

    async def enqueue(self) -> None:
        noop.send()

    async def enqueue_bulk(self, n: int) -> None:
        for start in range(0, n, 1000):
            dramatiq.group(noop.message() for _ in range(min(1000, n - start))).run()

    def worker_command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "dramatiq", __name__, "--processes", "1", "--threads", "10"]


SYSTEM = DramatiqSystem()
