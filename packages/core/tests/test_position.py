"""A pending job's place in line and ETA (issue 17): sane numbers, "no live worker" when no live
worker can run the job, and a Redis cost that does not grow with the number of pending jobs."""

from __future__ import annotations

import redis.asyncio as aioredis
from core_factories import make_caps, make_spec

from emp_core.queue.position import NO_WORKER, position
from emp_core.queue.queue import Queue
from emp_core.registry.workers import WorkerRegistry
from emp_core.settings import QueueSettings


async def _runtimes(queue: Queue, service: str, *ms: int) -> None:
    await queue.redis.lpush(queue.keys.runtimes(service), *ms)


async def test_rank_and_eta_of_a_pending_job(queue: Queue) -> None:
    registry = WorkerRegistry(queue.redis, queue.keys)
    await registry.register(make_caps(worker_id="gpu-a", hardware={"gpu_memory_gb": 24}))
    await registry.register(make_caps(worker_id="gpu-b", hardware={"gpu_memory_gb": 8}))
    await registry.register(make_caps(worker_id="other", services=["render"]))
    big = {"gpu_memory_gb": 16}
    ahead = await queue.submit_many([make_spec(priority=90) for _ in range(3)])
    await queue.submit_many([make_spec(priority=90, requirements=big) for _ in range(2)])
    await queue.submit_many([make_spec(priority=10) for _ in range(4)])  # behind it
    await queue.submit(make_spec(service="render", priority=99))  # not these workers' work
    target = await queue.submit(make_spec(priority=50))
    await _runtimes(queue, "simulation", 4000, 6000)

    p = await position(queue, await queue.get(target))
    assert sorted(p.eligible_workers) == ["gpu-a", "gpu-b"]
    assert (p.rank, p.capacity, p.busy, p.mean_run_s, p.run_samples) == (5, 2, 0, 5.0, 2)
    assert (p.eta_s, p.finish_eta_s, p.reason) == (10.0, 15.0, None)  # ⌊5/2⌋ waves of 5 s
    first = await position(queue, await queue.get(ahead[0]))
    assert (first.rank, first.eta_s) == (0, 0.0)  # next in line, a worker is idle


async def test_no_live_worker_can_run_it(queue: Queue) -> None:
    registry = WorkerRegistry(queue.redis, queue.keys)
    await registry.register(make_caps(worker_id="small", hardware={"gpu_memory_gb": 8}))
    job = await queue.submit(make_spec(requirements={"gpu_memory_gb": 80}))
    p = await position(queue, await queue.get(job))
    assert (p.reason, p.rank, p.eta_s, p.eligible_workers) == (NO_WORKER, None, None, [])
    assert p.why is not None
    assert "gpu_memory_gb" in p.why  # what no live worker has (emp_core.jobs.waiting)
    nobody = await queue.submit(make_spec(service="unserved"))
    assert (await position(queue, await queue.get(nobody))).reason == NO_WORKER
    await _runtimes(queue, "simulation", 1000)
    fit = await queue.submit(make_spec())
    assert (await position(queue, await queue.get(fit))).reason is None


async def _commands(redis: aioredis.Redis, queue: Queue, job_id: str) -> int:
    job = await queue.get(job_id)
    await redis.config_resetstat()
    p = await position(queue, job)
    assert p.rank is not None
    stats = await redis.info("commandstats")
    return sum(
        int(s["calls"]) for name, s in stats.items()
        if name not in {"cmdstat_config|resetstat", "cmdstat_info"}
    )  # fmt: skip


async def test_cost_does_not_grow_with_pending_jobs(
    private_redis: aioredis.Redis, private_redis_url: str
) -> None:
    counts = []
    for name, pending in (("small", 100), ("large", 5000)):
        queue = Queue(private_redis, QueueSettings(redis_url=private_redis_url, queue=name))
        await queue.functions.load()
        registry = WorkerRegistry(private_redis, queue.keys)
        for i in range(3):
            await registry.register(make_caps(worker_id=f"{name}-w{i}"))
        for start in range(0, pending, 1000):
            await queue.submit_many(
                make_spec(requirements={"gpu_memory_gb": i % 4})
                for i in range(min(1000, pending - start))
            )
        target = await queue.submit(make_spec(priority=1))
        counts.append(await _commands(private_redis, queue, target))
    assert counts[0] == counts[1]
    assert counts[1] <= 20
