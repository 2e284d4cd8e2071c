"""The worker registry (``emp_core.registry.workers``): a hash with a TTL per live worker,
indexed by last-seen time; the claim and complete functions keep its state current."""

from __future__ import annotations

import asyncio

from worker_helpers import eventually, make_worker_settings

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.registry.workers import WorkerRegistry
from emp_worker.worker import Worker


def caps(worker_id: str = "m1-gpu0") -> WorkerCapabilities:
    return WorkerCapabilities(
        worker_id=worker_id, machine_id="m1", services=["simulation"], hardware={"ram_gb": 8}
    )


async def test_register_list_and_deregister(redis, queue: Queue):
    registry = WorkerRegistry(redis, queue.keys, ttl_s=15)
    await registry.register(caps(), slots=2)

    (info,) = await registry.live()
    assert info.worker_id == "m1-gpu0"
    assert (info.machine_id, info.slots, info.state, info.job_id) == ("m1", 2, "idle", None)
    assert info.capabilities == caps()
    assert info.services == ["simulation"]
    assert 0 < await redis.pttl(queue.keys.worker("m1-gpu0")) <= 15_000
    assert await registry.get("m1-gpu0") == info

    await registry.deregister("m1-gpu0")
    assert await registry.live() == []
    assert await registry.get("m1-gpu0") is None
    assert await redis.zcard(queue.keys.workers()) == 0


async def test_refresh_extends_the_ttl_and_marks_state(redis, queue: Queue):
    registry = WorkerRegistry(redis, queue.keys, ttl_s=15)
    await registry.register(caps())
    await redis.pexpire(queue.keys.worker("m1-gpu0"), 1000)

    assert await registry.refresh(caps(), state="draining") is True

    assert await redis.pttl(queue.keys.worker("m1-gpu0")) > 1000
    info = await registry.get("m1-gpu0")
    assert info is not None
    assert info.state == "draining"


async def test_an_expired_worker_drops_out_and_comes_back_on_refresh(redis, queue: Queue):
    registry = WorkerRegistry(redis, queue.keys, ttl_s=15)
    await registry.register(caps("a"))
    await registry.register(caps("b"))
    await redis.delete(queue.keys.worker("a"))  # as if its TTL ran out

    assert [w.worker_id for w in await registry.live()] == ["b"]
    assert await redis.zscore(queue.keys.workers(), "a") is None  # pruned from the index

    assert await registry.refresh(caps("a")) is False  # re-registered in full
    info = await registry.get("a")
    assert info is not None
    assert info.capabilities == caps("a")
    assert await redis.pttl(queue.keys.worker("a")) > 0


async def test_a_running_worker_is_listed_busy_then_idle(redis, queue: Queue, settings):
    started, finish = asyncio.Event(), asyncio.Event()

    class Held:
        service = "simulation"

        async def run(self, job, ctx):
            started.set()
            await finish.wait()
            return

    registry = WorkerRegistry(redis, queue.keys)
    job_id = await queue.submit({"service": "simulation"})
    worker = Worker(
        make_worker_settings(settings, burst=False, idle_wait_seconds=60),
        redis=redis,
        connectors={"simulation": Held()},
    )
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 5)
        info = await registry.get(worker.id)
        assert info is not None
        assert (info.state, info.job_id) == ("busy", job_id)
        finish.set()

        async def idle() -> bool:
            info = await registry.get(worker.id)
            return info is not None and info.state == "idle"

        await eventually(idle, within=5)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 10)
    assert await registry.get(worker.id) is None
