"""``make bench-position``: the Redis cost of a pending job's place in line and ETA (issue 17) at
1,000, 10,000 and 100,000 pending jobs: commands sent (``INFO commandstats``) and the time of one
computation, on a private redis-server. The commands depend on the live workers and the
requirement classes, not on the pending jobs; ZCOUNT is O(log N) inside Redis.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import JobSpec
from emp_core.queue import Queue
from emp_core.queue.position import position
from emp_core.redis import connect
from emp_core.redis.server import RedisServer
from emp_core.registry.workers import WorkerRegistry
from emp_core.settings import QueueSettings

SIZES = (1_000, 10_000, 100_000)
CLASSES = 8
WORKERS = 10


async def _one(url: str, pending: int) -> tuple[int, int, float, int | None]:
    redis = connect(url)
    try:
        await redis.flushall()
        queue = Queue(redis, QueueSettings(redis_url=url, queue=f"pos{pending}"))
        await queue.functions.load()
        for start in range(0, pending, 5000):
            await queue.submit_many(
                JobSpec(service="simulation", priority=50,
                        requirements={"gpu_memory_gb": i % CLASSES})  # type: ignore[arg-type]
                for i in range(min(5000, pending - start))
            )  # fmt: skip
        # Registered after the fill: a worker's registration lives 15 s without a refresh.
        registry = WorkerRegistry(redis, queue.keys)
        for i in range(WORKERS):
            await registry.register(
                WorkerCapabilities(worker_id=f"w{i}", services=["simulation"],
                                   hardware={"gpu_memory_gb": 24})
            )  # fmt: skip
        await redis.lpush(queue.keys.runtimes("simulation"), *([2000] * 50))
        target = await queue.submit(JobSpec(service="simulation", priority=10))
        job = await queue.get(target)
        await redis.config_resetstat()
        started = time.perf_counter()
        place = await position(queue, job)
        elapsed = time.perf_counter() - started
        stats = await redis.info("commandstats")
        skip = {"cmdstat_config|resetstat", "cmdstat_info"}
        commands = sum(int(s["calls"]) for n, s in stats.items() if n not in skip)
        round_trips = 1 + 1 + 1 + 1 + 1  # workers, their hashes, classes+runtimes, score, counts
        return commands, round_trips, elapsed * 1000, place.rank
    finally:
        await redis.aclose()


async def main() -> None:
    table = Table(title=f"Place in line and ETA: {WORKERS} live workers, {CLASSES} classes")
    for column in ("pending jobs", "Redis commands", "round trips", "ms (one computation)",
                   "rank"):  # fmt: skip
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory(prefix="emp-bench-position-") as directory:
        server = RedisServer(Path(directory)).start()
        try:
            for pending in SIZES:
                commands, trips, ms, rank = await _one(server.url, pending)
                table.add_row(f"{pending:,}", str(commands), str(trips), f"{ms:.1f}", str(rank))
        finally:
            server.stop()
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main())
