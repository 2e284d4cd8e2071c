"""The measurements. Each takes a ``Queue`` on an empty private Redis and returns raw numbers;
``run.py`` turns them into figures.

Times are ``time.perf_counter``: CLOCK_MONOTONIC on Linux, one clock for every process of the
machine, so a worker process's timestamps compare with the submitter's. A rate's ``probe`` says
where the time went (``probe.py``); a ``server`` entry is a second, shorter pass with every Redis
command logged, which gives each function's time inside Redis and the commands it issued.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from redis.asyncio import Redis

from bench import workload
from bench.probe import Probe
from bench.report import latency_summary
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.queue.wake import Waker
from emp_core.settings import QueueSettings

NOOP_LIBRARY = (
    "#!lua name=benchnoop\nredis.register_function('bench_noop', function() return 1 end)\n"
)
_BULK_BATCH = 1000
_LOGGED_SUBMITS = 500
_LOGGED_DRAIN = 500
_LOGGED_CLAIMS = 1000


async def _fill(queue: Queue, jobs: list[dict[str, Any]], batch: int = _BULK_BATCH) -> None:
    for start in range(0, len(jobs), batch):
        await queue.submit_many(jobs[start : start + batch])


def _rate(done: int, probe: Probe, **extra: Any) -> dict[str, Any]:
    s = probe.summary
    return {
        "rate": done / s["wall_s"],
        "jobs": done,
        "client_us_per_job": s["client_cpu_s"] / done * 1e6,
        "redis_us_per_job": s["redis_cpu_s"] / done * 1e6,
        "probe": s,
        **extra,
    }


# --- the ceiling ----------------------------------------------------------------------------------
async def _noop(redis: Redis) -> None:
    await redis.fcall("bench_noop", 0)


async def fcall_sequential(redis: Redis, *, calls: int) -> dict[str, Any]:
    """Trivial FCALLs one at a time: rate and round-trip latency."""
    await redis.function_load(NOOP_LIBRARY, replace=True)
    for _ in range(500):
        await _noop(redis)
    samples = []
    async with Probe(redis) as probe:
        for _ in range(calls):
            t0 = time.perf_counter()
            await _noop(redis)
            samples.append(time.perf_counter() - t0)
    return {**_rate(calls, probe), **latency_summary(samples)}


async def fcall_concurrent(redis: Redis, *, calls: int, coroutines: int) -> dict[str, Any]:
    """Trivial FCALLs from ``coroutines`` coroutines sharing the client's connection pool."""
    per = calls // coroutines

    async def caller(n: int) -> None:
        for _ in range(n):
            await _noop(redis)

    await asyncio.gather(*(caller(20) for _ in range(coroutines)))  # open the pool's connections
    async with Probe(redis) as probe:
        await asyncio.gather(*(caller(per) for _ in range(coroutines)))
    return _rate(per * coroutines, probe)


async def fcall_pipelined(redis: Redis, *, calls: int, batch: int) -> dict[str, Any]:
    async with Probe(redis) as probe:
        for _ in range(calls // batch):
            pipe = redis.pipeline(transaction=False)
            for _ in range(batch):
                pipe.fcall("bench_noop", 0)
            await pipe.execute()
    return _rate(calls // batch * batch, probe, batch=batch)


def redis_benchmark(port: int, *, requests: int = 200_000, clients: int = 50) -> float | None:
    """What the server does without Python: ``redis-benchmark``'s FCALL rate (None if absent)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    proc = subprocess.run(
        [binary, "-p", str(port), "-n", str(requests), "-c", str(clients), "--csv",
         "FCALL", "bench_noop", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) > 1 and cells[0].startswith("FCALL"):
            return float(cells[1])
    return None


# --- submitting -----------------------------------------------------------------------------------
async def submit_one_at_a_time(queue: Queue, *, jobs: int) -> dict[str, Any]:
    for _ in range(300):
        await queue.submit(workload.noop_job())
    specs = [workload.noop_job() for _ in range(jobs + _LOGGED_SUBMITS)]
    async with Probe(queue.redis) as probe:
        for spec in specs[:jobs]:
            await queue.submit(spec)
    async with Probe(queue.redis, slowlog=True) as logged:
        for spec in specs[jobs:]:
            await queue.submit(spec)
    return _rate(jobs, probe, server=logged.summary["server_us"])


async def submit_bulk(queue: Queue, *, jobs: int, batch: int) -> dict[str, Any]:
    await _fill(queue, [workload.noop_job() for _ in range(batch)], batch)
    specs = [workload.noop_job() for _ in range(jobs + 3 * batch)]
    async with Probe(queue.redis) as probe:
        await _fill(queue, specs[:jobs], batch)
    async with Probe(queue.redis, slowlog=True) as logged:
        await _fill(queue, specs[jobs:], batch)
    return _rate(jobs, probe, batch=batch, server=logged.summary["server_us"])


# --- working --------------------------------------------------------------------------------------
async def claim_complete(queue: Queue, *, workers: int, jobs: int) -> dict[str, Any]:
    """``workers`` coroutines of this process claim and complete no-op jobs, each one job at a time,
    until ``jobs`` are done: jobs/s over the whole stretch. As the worker does, completing a job
    claims the next one in the same call."""
    caps = [workload.noop_worker(i) for i in range(workers)]
    warmup = 20 * workers
    # Each of the three stretches ends with every coroutine finishing the job it holds.
    total = warmup + jobs + _LOGGED_DRAIN + 3 * workers
    await _fill(queue, [workload.noop_job() for _ in range(total)])
    budget = [0]

    async def work(caps: WorkerCapabilities) -> None:
        claimed = None
        while budget[0] > 0:
            budget[0] -= 1
            if claimed is None:
                claimed = (await queue.claim(caps)).claimed
            if claimed is None:
                raise RuntimeError("the queue ran dry before the budget: the fill is wrong")
            claimed = (await queue.complete(claimed, None, then_claim=caps)).claimed
        if claimed is not None:  # the budget ran out: finish what this coroutine holds
            await queue.complete(claimed, None)

    budget[0] = warmup
    await asyncio.gather(*(work(c) for c in caps))  # warm up, open the pool's connections
    budget[0] = jobs
    async with Probe(queue.redis) as probe:
        await asyncio.gather(*(work(c) for c in caps))
    budget[0] = _LOGGED_DRAIN
    async with Probe(queue.redis, slowlog=True) as logged:
        await asyncio.gather(*(work(c) for c in caps))
    return _rate(jobs, probe, workers=workers, server=logged.summary["server_us"])


_CHUNK = 50


async def claim_latency(
    queues: dict[str, tuple[Queue, int]], *, samples: int, seed: int
) -> dict[str, dict[str, Any]]:
    """One claim at a time by ``workload.mixed_worker``, on each of ``queues`` (name -> queue and
    how many mixed jobs it holds). After each claim (untimed) the job is completed and a job the
    worker can run is submitted, so the depth stays. The queues take turns in chunks of 50 claims,
    so a neighbour's burst on a shared machine falls on every depth alike, not on one."""
    rng = random.Random(seed)
    caps = workload.mixed_worker()
    times: dict[str, list[float]] = {name: [] for name in queues}

    async def one(name: str, record: bool) -> None:
        queue = queues[name][0]
        t0 = time.perf_counter()
        result = await queue.claim(caps)
        elapsed = time.perf_counter() - t0
        if result.claimed is None:
            raise RuntimeError("the mixed worker found nothing to claim: the workload is wrong")
        if record:
            times[name].append(elapsed)
        await queue.complete(result.claimed, None)
        await queue.submit(workload.matchable_job(rng))

    for queue, depth in queues.values():
        await _fill(queue, [workload.mixed_job(rng) for _ in range(depth)])
    for name in queues:
        for _ in range(min(200, samples // 5)):
            await one(name, False)
    redis = next(iter(queues.values()))[0].redis
    async with Probe(redis) as probe:
        for _ in range(0, samples, _CHUNK):
            for name in queues:
                for _ in range(_CHUNK):
                    await one(name, True)
    out: dict[str, dict[str, Any]] = {}
    for name, (queue, _) in queues.items():
        matchable = await workload.matchable_pending(queue)
        async with Probe(redis, slowlog=True) as logged:
            for _ in range(min(samples, _LOGGED_CLAIMS)):
                await one(name, False)
        out[name] = {
            **latency_summary(times[name]),
            "pending": sum((await queue.depth()).values()),
            "matchable": matchable,
            "probe": probe.summary,
            "server": logged.summary["server_us"],
        }
    return out


# --- waking ---------------------------------------------------------------------------------------
Report = Callable[[str, float], None]


async def idle_worker(
    queue: Queue, caps: WorkerCapabilities, report: Report, stop: asyncio.Event
) -> None:
    """One worker slot as ``emp_worker`` runs it, minus the connector: clear the doorbell, claim,
    wait on the doorbell when nothing came; ``report(job_id, t)`` the moment a claim returns a job,
    then complete it at once. Returns once ``stop`` is set and the doorbell rung.

    It stops on a flag, not by cancellation: with Python 3.11 and redis-py's default
    ``socket_timeout`` a cancel that lands while a command is being sent is swallowed (redis-py
    sends under ``asyncio.wait_for``), so a cancelled claim loop would spin on.
    """
    async with Waker(queue.redis, queue.keys, caps.services, caps.worker_id) as waker:
        signal = waker.signal(0)
        stop_ringing = asyncio.create_task(_ring_on(stop, waker))
        try:
            while not stop.is_set():
                signal.clear()  # before the claim: a wake-up from now on is not lost
                # As a slot: an empty claim enters it as idle, and the next job wakes it alone.
                result = await queue.claim(caps, slot=0)
                if result.claimed is None:
                    await signal.wait(5.0 if result.retry_in is None else result.retry_in)
                    continue
                report(result.claimed.id, time.perf_counter())
                await queue.complete(result.claimed, None)
        finally:
            stop_ringing.cancel()


async def _ring_on(stop: asyncio.Event, waker: Waker) -> None:
    await stop.wait()
    waker.wake_all()


async def _submit_and_wait(
    queue: Queue, samples: int, gap_s: float, claimed: Callable[[str], Any]
) -> list[float]:
    """Submit one job at a time, ``gap_s`` after the previous was claimed (the worker is back to
    waiting on Redis); time from just before ``submit`` to the claim's return."""
    times: list[float] = []
    for i in range(samples + 50):
        await asyncio.sleep(gap_s)
        t0 = time.perf_counter()
        job_id = await queue.submit(workload.noop_job())
        t1 = await claimed(job_id)
        if i >= 50:
            times.append(t1 - t0)
    return times


async def submit_to_claimed_in_process(
    queue: Queue, *, samples: int, gap_s: float
) -> dict[str, Any]:
    """Submitter and idle worker as two tasks of this process."""
    loop = asyncio.get_running_loop()
    seen: dict[str, asyncio.Future[float]] = {}

    def future(job_id: str) -> asyncio.Future[float]:
        return seen.setdefault(job_id, loop.create_future())

    def report(job_id: str, t: float) -> None:
        future(job_id).set_result(t)

    async def claimed(job_id: str) -> float:
        t = await asyncio.wait_for(future(job_id), 5)
        del seen[job_id]
        return t

    stop = asyncio.Event()
    worker = asyncio.create_task(idle_worker(queue, workload.noop_worker(0), report, stop))
    await asyncio.sleep(0.2)  # subscribed, and blocked on its first wait
    try:
        times = await _submit_and_wait(queue, samples, gap_s, claimed)
    finally:
        stop.set()
        await asyncio.wait({worker}, timeout=10)
    worker.result()  # the worker's own error, if it had one
    return latency_summary(times)


def _worker_process(url: str, queue_name: str, conn: Connection) -> None:
    """The idle worker as its own process (a multiprocessing target), reporting over ``conn``."""

    async def main() -> None:
        redis = Redis.from_url(url)
        queue = Queue(redis, QueueSettings(redis_url=url, queue=queue_name))
        conn.send("ready")
        await idle_worker(
            queue, workload.noop_worker(1), lambda j, t: conn.send((j, t)), asyncio.Event()
        )

    asyncio.run(main())


async def submit_to_claimed_across_processes(
    queue: Queue, url: str, *, samples: int, gap_s: float
) -> dict[str, Any]:
    """Submitter here, idle worker in a child process: the deployment's shape."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(
        target=_worker_process, args=(url, queue.settings.queue, theirs), daemon=True
    )
    child.start()
    loop = asyncio.get_running_loop()

    async def receive() -> Any:
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(ours.fileno(), readable)
        try:
            await asyncio.wait_for(ready, 30)
        finally:
            loop.remove_reader(ours.fileno())
        return ours.recv()

    async def claimed(job_id: str) -> float:
        claimed_id, t = await receive()
        if claimed_id != job_id:
            raise RuntimeError(f"the worker claimed {claimed_id}, not {job_id}")
        return float(t)

    try:
        if await receive() != "ready":
            raise RuntimeError("the worker process did not start")
        await asyncio.sleep(0.5)  # subscribed, and blocked on its first wait
        times = await _submit_and_wait(queue, samples, gap_s, claimed)
    finally:
        child.terminate()
        child.join(5)
    return latency_summary(times)
