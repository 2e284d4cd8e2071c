"""The starvation case: 100,000 pending jobs a worker cannot run sit ahead of one it can. The
claim must find that job, and its work (Redis commands issued inside the claim function) must not
grow with the number of pending jobs.

Commands are counted with ``INFO commandstats``, which counts the calls a function makes, on a
server of the test's own after ``CONFIG RESETSTAT``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from core_factories import cold_library, make_caps, make_spec

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import JobSpec
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings

BATCH = 1000
OTHER_SERVICES = ["txt2vid", "a1111", "upscale"]
# Requirement classes of the worker's own service that it cannot run, one rule each.
UNMATCHABLE: list[dict[str, Any]] = [
    {"gpu_memory_gb": 80},
    {"models": ["flux-pro"]},
    {"capabilities": {"region": "us"}},
    {"exclude": {"models": ["sdxl"]}},
    {"customer_isolation": "strict"},
]
# The class of the denied run: only the "deny" worker has the RAM for it.
RUN_CLASS = {"ram_gb": 16}

BASE_CAPS: dict[str, Any] = {
    "models": {"simulation": ["sdxl"]},
    "capabilities": {"region": "eu"},
}
# Everything pending is beyond this worker but one job of class {}.
PLAIN = make_caps(worker_id="plain", hardware={"gpu_memory_gb": 24, "ram_gb": 8}, **BASE_CAPS)
# This worker runs the denied run's class, but not the customer of its first 30%.
DENY = make_caps(
    worker_id="deny",
    hardware={"gpu_memory_gb": 24, "ram_gb": 32},
    denied_customers=["blocked"],
    **BASE_CAPS,
)


def blockers(total: int) -> list[JobSpec]:
    """``total`` jobs neither target worker can run, all ahead of the targets (priority 60):
    40% of other services, 30% of unrunnable classes, 30% a denied customer's run."""
    other = total * 4 // 10
    unmatchable = total * 3 // 10
    run = total - other - unmatchable
    specs = [
        make_spec(service=OTHER_SERVICES[i % len(OTHER_SERVICES)], priority=60)
        for i in range(other)
    ]
    specs += [
        make_spec(priority=60, requirements=UNMATCHABLE[i % len(UNMATCHABLE)])
        for i in range(unmatchable)
    ]
    specs += [
        make_spec(priority=60, requirements=RUN_CLASS, customer_id="blocked") for _ in range(run)
    ]
    return specs


async def commands_of_one_claim(
    redis: aioredis.Redis, queue: Queue, caps: WorkerCapabilities
) -> tuple[str | None, int]:
    """Claim once with cold library caches; the job claimed and the commands the claim ran."""
    await cold_library(queue)
    await redis.config_resetstat()
    result = await queue.claim(caps)
    stats = await redis.info("commandstats")
    counted = {
        name: int(s["calls"])
        for name, s in stats.items()
        if name not in {"cmdstat_fcall", "cmdstat_config|resetstat", "cmdstat_info"}
    }
    return (None if result.claimed is None else result.claimed.id), sum(counted.values())


async def scenario(
    redis: aioredis.Redis, settings: QueueSettings, name: str, pending: int
) -> tuple[int, int]:
    """Fill a queue with ``pending`` blockers and two targets; command counts of the two claims."""
    queue = Queue(redis, settings.model_copy(update={"queue": name}))
    await queue.functions.load()
    specs = blockers(pending)
    started = time.perf_counter()
    for i in range(0, len(specs), BATCH):
        await queue.submit_many(specs[i : i + BATCH])
    plain_target = await queue.submit(make_spec(priority=50, customer_id="ok"))
    deny_target = await queue.submit(
        make_spec(priority=50, requirements=RUN_CLASS, customer_id="ok")
    )
    loaded = time.perf_counter() - started
    assert sum((await queue.depth()).values()) == pending + 2

    plain_claimed, plain_commands = await commands_of_one_claim(redis, queue, PLAIN)
    assert plain_claimed == plain_target
    deny_claimed, deny_commands = await commands_of_one_claim(redis, queue, DENY)
    assert deny_claimed == deny_target
    print(
        f"{pending:>7,} pending (loaded in {loaded:.1f} s): claim past unrunnable classes "
        f"{plain_commands} commands, past a denied run of {pending - pending * 7 // 10:,} "
        f"{deny_commands} commands"
    )
    return plain_commands, deny_commands


@pytest.mark.slow
async def test_claim_finds_the_one_runnable_job_with_bounded_work(
    private_redis: aioredis.Redis, settings: QueueSettings
) -> None:
    settings = settings.model_copy(update={"redis_url": ""})
    small_plain, small_deny = await scenario(private_redis, settings, "small", 100)
    big_plain, big_deny = await scenario(private_redis, settings, "big", 100_000)
    try:
        # Past classes it cannot run, the claim's work does not depend on their jobs at all.
        assert big_plain == small_plain
        assert big_plain < 50
        # Past a denied run the claim binary-searches: a few commands per halving, no more.
        halvings = math.ceil(math.log2(100_000 * 0.3)) - math.floor(math.log2(100 * 0.3))
        assert big_deny - small_deny <= 4 * (halvings + 1)
        assert big_deny < 200
    finally:
        await private_redis.flushall()
