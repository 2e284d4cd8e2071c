"""The workloads, the same for every system: each ``System`` says how it enqueues and how its
own worker CLI starts; the harness times it.

- **enqueue, one at a time**: ``n`` jobs from one process, each call awaited before the next;
- **bulk enqueue**: ``n`` jobs through the system's batch call (``bulk_how`` says which);
- **drain**: ``n`` no-op jobs enqueued, then 1 or 2 worker processes spawned; timed from the
  spawn to the last job's start, and from the first job's start to the last's (the difference is
  the start-up);
- **idle pickup**: one worker process idle; one job enqueued at a time, from just before the
  enqueue call to the job's start in the worker (CLOCK_MONOTONIC, shared by the processes).

Jobs are counted by what their task recorded (``record.py``), not through each system's API, so
nothing in the measurement favours one system's bookkeeping. Redis is flushed before each
workload. Standard library and redis-py only: this runs in the peers' virtual environment too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from bench.peers import record

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each workload does."""

    enqueue: int = 5_000
    bulk: int = 10_000
    drain: int = 5_000
    pickups: int = 200
    timeout_s: float = 180.0  # for any one wait: a system that stalls fails, the run goes on


class System(Protocol):
    """One queue as the harness drives it."""

    name: str
    version: str
    bulk_how: str  # how ``enqueue_bulk`` enqueues, for the table

    async def open(self, url: str) -> None: ...

    async def reset(self) -> None:
        """Called after each flush of Redis."""

    async def enqueue(self) -> None:
        """Enqueue one no-op job and return once the system says it is queued."""

    async def enqueue_bulk(self, n: int) -> None: ...

    def worker_command(self, index: int) -> list[str]:
        """The argv of worker process ``index`` (0 or 1) of this system's own CLI."""

    async def close(self) -> None: ...


class Stateless:
    """What a ``System`` whose client needs no opening, resetting or closing inherits."""

    async def open(self, url: str) -> None:
        pass

    async def reset(self) -> None:
        pass

    async def close(self) -> None:
        pass


class WorkerFailed(RuntimeError):
    pass


class Workers:
    """Worker processes of one system: spawned in their own process group, stopped with it."""

    def __init__(self, system: System, url: str, directory: Path, count: int) -> None:
        self.system, self.url, self.directory, self.count = system, url, directory, count
        self.processes: list[subprocess.Popen[bytes]] = []
        self.spawned_ns = 0

    def __enter__(self) -> Workers:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_REDIS_URL": self.url,
               record.ENV: str(self.directory)}  # fmt: skip
        self.spawned_ns = time.monotonic_ns()
        for i in range(self.count):
            log = (self.directory / f"worker{i}.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    self.system.worker_command(i),
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            for p in self.processes:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, sig)
            deadline = time.monotonic() + wait_s
            for p in self.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(max(0.0, deadline - time.monotonic()))
        for p in self.processes:  # what the group left behind (forked children)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)

    def check(self) -> None:
        for i, p in enumerate(self.processes):
            if p.poll() is not None:
                log = (self.directory / f"worker{i}.log").read_text(errors="replace")
                raise WorkerFailed(f"worker {i} exited with {p.returncode}: {log[-1500:]}")

    async def until(self, jobs: int, timeout_s: float, poll_s: float) -> None:
        """Wait until ``jobs`` jobs have started, every process together."""
        deadline = time.monotonic() + timeout_s
        while record.count(self.directory) < jobs:
            self.check()
            if time.monotonic() > deadline:
                raise WorkerFailed(
                    f"{record.count(self.directory)} of {jobs} jobs started in {timeout_s:g} s"
                )
            await asyncio.sleep(poll_s)


class Harness:
    def __init__(self, system: System, url: str, directory: Path, sizes: Sizes) -> None:
        self.system, self.url, self.directory, self.sizes = system, url, directory, sizes
        pool = redis.ConnectionPool.from_url(url)
        self.redis = redis.Redis(connection_pool=pool)

    async def fresh(self) -> None:
        self.redis.flushall()
        await self.system.reset()
        record.clear(self.directory)

    async def enqueue_one(self) -> float:
        await self.fresh()
        n = self.sizes.enqueue
        t0 = time.perf_counter()
        for _ in range(n):
            await self.system.enqueue()
        return n / (time.perf_counter() - t0)

    async def enqueue_bulk(self) -> float:
        await self.fresh()
        n = self.sizes.bulk
        t0 = time.perf_counter()
        await self.system.enqueue_bulk(n)
        return n / (time.perf_counter() - t0)

    async def drain(self, processes: int) -> dict[str, Any]:
        await self.fresh()
        n = self.sizes.drain
        await self.system.enqueue_bulk(n)
        with Workers(self.system, self.url, self.directory, processes) as workers:
            await workers.until(n, self.sizes.timeout_s, poll_s=0.005)
        s = record.stamps(self.directory)
        first, last = s[0], s[-1]
        return {
            "jobs": len(s),
            "from_spawn": n / ((last - workers.spawned_ns) / 1e9),
            "running": (n - 1) / max(1e-9, (last - first) / 1e9),
            "startup_s": (first - workers.spawned_ns) / 1e9,
            "per_process": sorted(
                (p.stat().st_size // record.LINE for p in self.directory.glob("*.rec")),
                reverse=True,
            ),
        }

    async def pickup(self) -> dict[str, Any]:
        """Latency of one job at a time to an idle worker process, in ms."""
        await self.fresh()
        with Workers(self.system, self.url, self.directory, 1) as workers:
            await self.system.enqueue()  # warm-up: the worker is running once it has started
            await workers.until(1, self.sizes.timeout_s, poll_s=0.005)
            await asyncio.sleep(0.5)  # let start-up work settle: the worker is idle
            samples = []
            for i in range(self.sizes.pickups):
                t0 = time.monotonic_ns()
                await self.system.enqueue()
                await workers.until(i + 2, self.sizes.timeout_s, poll_s=0.0005)
                samples.append((record.stamps(self.directory)[-1] - t0) / 1e6)
                await asyncio.sleep(random.uniform(0.01, 0.03))  # idle again, not in phase
        samples.sort()
        return {
            "samples": len(samples),
            "p50_ms": samples[len(samples) // 2],
            "p99_ms": samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))],
        }


async def measure(system: System, url: str, directory: Path, sizes: Sizes) -> dict[str, Any]:
    """Every workload against ``system``; a failed one is reported, the others still run."""
    harness = Harness(system, url, directory, sizes)
    await system.open(url)
    out: dict[str, Any] = {
        "system": system.name, "version": system.version, "bulk_how": system.bulk_how,
        "sizes": asdict(sizes), "errors": {},
    }  # fmt: skip
    steps = {
        "enqueue_one": harness.enqueue_one,
        "enqueue_bulk": harness.enqueue_bulk,
        "drain_1": lambda: harness.drain(1),
        "drain_2": lambda: harness.drain(2),
        "pickup": harness.pickup,
    }
    try:
        for name, step in steps.items():
            try:
                out[name] = await step()
            except WorkerFailed as exc:
                out["errors"][name] = str(exc)
    finally:
        await system.close()
        harness.redis.close()
    return out
