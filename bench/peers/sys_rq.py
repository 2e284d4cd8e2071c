"""RQ as the harness drives it: ``Queue.enqueue``, ``Queue.enqueue_many`` (one pipeline) and its
CLI, ``rq worker`` with ``SimpleWorker`` (jobs in the worker process: RQ's default forks a
work horse per job, which measures ``fork``, not the queue)."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

import redis
from rq import Queue

from bench.peers.harness import Stateless
from bench.peers.record import record


def noop() -> None:
    record()


class RqSystem(Stateless):
    name = "RQ"
    version = version("rq")
    bulk_how = "enqueue_many, 1,000 a call"

    def __init__(self) -> None:
        self.queue: Queue | None = None

    async def open(self, url: str) -> None:
        pool = redis.ConnectionPool.from_url(url)
        self.queue = Queue("bench", connection=redis.Redis(connection_pool=pool))

    async def enqueue(self) -> None:
        assert self.queue is not None
        self.queue.enqueue(noop)

    async def enqueue_bulk(self, n: int) -> None:
        assert self.queue is not None
        for start in range(0, n, 1000):
            jobs = [Queue.prepare_data(noop) for _ in range(min(1000, n - start))]
            self.queue.enqueue_many(jobs)

    def worker_command(self, index: int) -> list[str]:
        return [os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "bench",
                "--url", os.environ["BENCH_REDIS_URL"], "--worker-class", "rq.worker.SimpleWorker",
                "--name", f"bench-{index}-{os.getpid()}"]  # fmt: skip


SYSTEM = RqSystem()
