"""Fleet-scale figures of issue 10: the claim's cost against the number of requirement classes,
and what one submit costs with 1,000 idle workers.

- ``classes_claim``: a worker claims (and finds nothing) on a queue holding ``classes`` pending
  jobs, each in a requirement class of its own that the worker cannot run; p50/p99 of the claim,
  and the new profile's first pass over the classes: how many claims it took, the slowest, the
  total (the pass is spread over claims so that no single one blocks Redis for long).
- ``idle_fleet``: 1,000 simulated workers (coroutines, each with its own ``Waker`` subscription,
  as a worker process has) sit idle; one job is submitted; the figures are the claims that submit
  triggers and the Redis commands run meanwhile. Also runnable on an older checkout (the claim
  without ``slot``), which is how the "before" figures were taken.

``uv run python -m bench.fleet`` prints both on a private Redis.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.report import latency_summary
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.queue.wake import Waker
from emp_core.redis.client import connect
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings

_BATCH = 1000
_WORKER = WorkerCapabilities(
    worker_id="bench", services=["simulation"], hardware={"gpu_memory_gb": 24}
)


async def classes_claim(redis: Redis, url: str, classes: int, samples: int) -> dict[str, Any]:
    """Claim latency with ``classes`` pending jobs in as many classes, none runnable by it."""
    await redis.flushall()
    queue = Queue(redis, QueueSettings(redis_url=url, queue=f"classes{classes}"))
    await queue.functions.load()
    specs = [
        {
            "service": "simulation",
            "requirements": {"gpu_memory_gb": 80, "capabilities": {"n": f"v{i}"}},
        }
        for i in range(classes)
    ]
    for i in range(0, len(specs), _BATCH):
        await queue.submit_many(specs[i : i + _BATCH])
    # A new profile: matched once against every class, a bounded step per claim; a claim during
    # that first pass answers "try again at once" (retry_in 0), as a worker's slots then do.
    pass_claims, slowest, t_pass = 0, 0.0, time.perf_counter()
    while True:
        t0 = time.perf_counter()
        result = await queue.claim(_WORKER)
        slowest = max(slowest, time.perf_counter() - t0)
        pass_claims += 1
        if pass_claims == 1:
            first_ms = slowest * 1000
        if result.retry_in != 0:
            break
    pass_ms = (time.perf_counter() - t_pass) * 1000
    for _ in range(200):
        await queue.claim(_WORKER)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        result = await queue.claim(_WORKER)
        times.append(time.perf_counter() - t0)
        assert result.claimed is None
    return {
        "classes": classes, "first_claim_ms": first_ms, "pass_claims": pass_claims,
        "pass_ms": pass_ms, "pass_slowest_ms": slowest * 1000, **latency_summary(times),
    }  # fmt: skip


async def _commands(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name: int(s["calls"]) for name, s in stats.items()}


async def idle_fleet(redis: Redis, url: str, workers: int) -> dict[str, Any]:
    """Claims and Redis commands that one submit triggers with ``workers`` idle workers."""
    await redis.flushall()
    settings = QueueSettings(redis_url=url, queue="fleet")
    queue = Queue(redis, settings)
    await queue.functions.load()
    targeted = "slot" in inspect.signature(queue.claim).parameters
    claims = [0] * workers
    stop = asyncio.Event()
    ready = asyncio.Event()
    idle = 0

    client = Redis.from_url(url, max_connections=4 * workers)
    q = Queue(client, settings)
    wakers = []
    for i in range(workers):  # one subscription each, as a worker process has; opened in turn
        waker = Waker(client, q.keys, ["simulation"], f"w{i}")
        await waker.start()
        wakers.append(waker)

    async def worker(i: int) -> None:
        nonlocal idle
        caps = WorkerCapabilities(worker_id=f"w{i}", services=["simulation"])
        waker = wakers[i]
        sig = waker.signal(0) if targeted else waker.signal()
        first = True
        while not stop.is_set():
            sig.clear()
            result = await (q.claim(caps, slot=0) if targeted else q.claim(caps))
            claims[i] += 1
            if result.claimed is not None:
                await q.complete(result.claimed, None)
                continue
            if first:
                first = False
                idle += 1
                if idle == workers:
                    ready.set()
            await sig.wait(60)

    tasks = [asyncio.create_task(worker(i)) for i in range(workers)]
    await asyncio.wait_for(ready.wait(), 120)
    await asyncio.sleep(0.5)
    before_claims = sum(claims)
    before_each = list(claims)
    before = await _commands(redis)
    await queue.submit({"service": "simulation"})
    await asyncio.sleep(1.0)
    after = await _commands(redis)
    triggered = sum(claims) - before_claims
    woken = sum(1 for a, b in zip(before_each, claims, strict=True) if b != a)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    fcalls = delta.get("cmdstat_fcall", 0)
    inner = sum(v for k, v in delta.items() if k not in {"cmdstat_fcall", "cmdstat_info"})
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for waker in wakers:
        await waker.close()
    await client.aclose()
    return {
        "workers": workers,
        "targeted": targeted,
        "claims_triggered": triggered,
        "workers_woken": woken,
        "fcalls": fcalls,
        "commands": inner,
    }


async def _main() -> None:
    with tempfile.TemporaryDirectory(prefix="emp-fleet-") as directory:
        server = RedisServer(Path(directory))
        with server:
            redis = connect(server.url)
            print("claim, none runnable (ms):")
            print(
                f"{'classes':>10} {'p50':>8} {'p99':>8} {'max':>8} {'first claim':>12} "
                f"{'first pass: claims':>19} {'slowest':>8} {'total':>9}"
            )
            for n in (0, 10, 100_000):
                r = await classes_claim(redis, server.url, n, 2000)
                print(
                    f"{n:>10,} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['max_ms']:8.2f} "
                    f"{r['first_claim_ms']:9.1f} ms {r['pass_claims']:>19,} "
                    f"{r['pass_slowest_ms']:5.1f} ms {r['pass_ms']:6.0f} ms"
                )
            f = await idle_fleet(redis, server.url, 1000)
            how = "targeted" if f["targeted"] else "broadcast"
            print(
                f"one submit, {f['workers']:,} idle workers ({how} wake-ups): "
                f"{f['workers_woken']} workers woken, {f['claims_triggered']} claims, "
                f"{f['fcalls']} FCALLs, {f['commands']} Redis commands inside them"
            )
            await redis.aclose()


if __name__ == "__main__":
    asyncio.run(_main())
