"""The claim's index and targeted wake-ups (issue 10, items 1 and 2).

A class is matched against a worker's capability profile once, not on every claim: the commands
a claim issues (``INFO commandstats`` on a server of the test's own) are the same with 10 and with
10,000 requirement classes the worker cannot run. A job becoming pending wakes one idle slot able
to run it, never every idle worker, and a slot whose process is gone is skipped.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from core_factories import claimed_id, make_caps, make_spec

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.redis.subscription import ShardSubscription
from emp_core.settings import QueueSettings

BATCH = 1000
WORKER = make_caps(worker_id="w1", hardware={"gpu_memory_gb": 24})
IGNORED = {"cmdstat_fcall", "cmdstat_config|resetstat", "cmdstat_info"}


async def commands(redis: aioredis.Redis, call: Any) -> tuple[Any, int]:
    await redis.config_resetstat()
    result = await call
    stats = await redis.info("commandstats")
    return result, sum(int(s["calls"]) for name, s in stats.items() if name not in IGNORED)


async def queue_with_classes(redis: aioredis.Redis, settings: QueueSettings, classes: int) -> Queue:
    """``classes`` pending jobs, each in a class of its own that needs 80 GB (beyond WORKER)."""
    queue = Queue(redis, settings.model_copy(update={"queue": f"idx{classes}"}))
    await queue.functions.load()
    specs = [
        make_spec(priority=60, requirements={"gpu_memory_gb": 80, "capabilities": {"n": f"v{i}"}})
        for i in range(classes)
    ]
    for i in range(0, len(specs), BATCH):
        await queue.submit_many(specs[i : i + BATCH])
    return queue


async def first_pass(queue: Queue, caps: WorkerCapabilities = WORKER) -> int:
    """Claim until the profile's first pass over the class registry has ended (a claim during the
    pass that finds nothing answers "try again at once"); returns the claims it took."""
    claims = 1
    while (await queue.claim(caps)).retry_in == 0:
        claims += 1
    return claims


async def claim_costs(redis: aioredis.Redis, queue: Queue) -> tuple[int, int, int]:
    """Commands of: an empty claim, a claim of a runnable job, a claim of a job submitted after
    the worker's profile was registered (its class matched at submit)."""
    await first_pass(queue)  # the first claims register the profile and match every class once
    result, empty = await commands(redis, queue.claim(WORKER))
    assert result.claimed is None
    job = await queue.submit(make_spec())
    result, runnable = await commands(redis, queue.claim(WORKER))
    assert result.claimed is not None
    assert result.claimed.id == job
    late = await queue.submit(make_spec(requirements={"gpu_memory_gb": 16}))
    result, late_cost = await commands(redis, queue.claim(WORKER))
    assert result.claimed is not None
    assert result.claimed.id == late
    return empty, runnable, late_cost


async def test_claim_commands_do_not_grow_with_the_number_of_classes(
    private_redis: aioredis.Redis, settings: QueueSettings
) -> None:
    few = await claim_costs(private_redis, await queue_with_classes(private_redis, settings, 10))
    many = await claim_costs(
        private_redis, await queue_with_classes(private_redis, settings, 10_000)
    )
    print(f"\nclaim commands (empty, runnable, late class): 10 classes {few}, 10,000 {many}")
    assert few == many
    assert max(many) <= 40


async def test_a_new_profiles_first_pass_is_spread_over_its_claims(
    private_redis: aioredis.Redis, settings: QueueSettings
) -> None:
    """The first pass of a new profile over 10,000 classes is not one claim's work: each claim
    matches a bounded step (64 classes here) and says to try again at once until the pass ends,
    and a runnable job in a class the pass reaches late is found then."""
    few = await queue_with_classes(private_redis, settings, 10)
    _, first_few = await commands(private_redis, few.claim(WORKER))
    many = await queue_with_classes(private_redis, settings, 10_000)
    runnable = await many.submit(make_spec(requirements={"gpu_memory_gb": 80}))
    big = make_caps(worker_id="big", hardware={"gpu_memory_gb": 80})
    result, first_many = await commands(private_redis, many.claim(WORKER))
    assert result.claimed is None
    assert result.retry_in == 0  # the pass goes on: worth claiming again at once
    print(f"\nfirst claim commands: 10 classes {first_few}, 10,000 classes {first_many}")
    assert first_many <= first_few + 3 * 64 + 10  # one step: at most ~3 commands per class
    claims = await first_pass(many)
    print(f"claims to end the first pass over 10,001 classes: {claims + 1}")
    assert 10_001 / 128 <= claims + 1 <= 10_001 / 16  # HSCAN's COUNT is a hint, not a bound
    # Another profile's pass finds the one job it can run wherever HSCAN meets its class.
    found = None
    while found is None:
        result = await many.claim(big)
        found = result.claimed
        assert found is not None or result.retry_in == 0
    assert found.id == runnable


async def test_a_new_profile_is_matched_once_against_existing_classes(
    private_redis: aioredis.Redis, settings: QueueSettings
) -> None:
    queue = await queue_with_classes(private_redis, settings, 50)
    runnable = await queue.submit(make_spec(requirements={"gpu_memory_gb": 80}))
    big = make_caps(worker_id="big", hardware={"gpu_memory_gb": 80}, capabilities={"n": "v7"})
    # The first claim of a new profile matches every class once and lists the two it can run;
    # it takes the better (priority 60, the n=7 class), then the other.
    first = await queue.claim(big)
    assert first.claimed is not None
    assert first.claimed.job.requirements.capabilities == {"n": "v7"}
    pid = await profile_id(private_redis, queue)
    assert await private_redis.zcard(queue.keys.ready("simulation", pid)) == 1
    assert await claimed_id(queue, big) == runnable
    assert await claimed_id(queue, big) is None
    assert await private_redis.zcard(queue.keys.ready("simulation", pid)) == 0


async def profile_id(redis: aioredis.Redis, queue: Queue) -> str:
    (pid,) = await redis.zrange(queue.keys.profiles_seen("simulation"), 0, -1)
    return str(pid.decode())


async def test_priority_and_fifo_hold_across_classes_through_the_index(queue: Queue) -> None:
    await queue.claim(WORKER)  # profile registered before anything is pending
    old_low = await queue.submit(make_spec(priority=10, requirements={"gpu_memory_gb": 8}))
    new_high = await queue.submit(make_spec(priority=90, requirements={"gpu_memory_gb": 16}))
    old_mid = await queue.submit(make_spec(priority=50, requirements={"cpu_cores": 0}))
    new_mid = await queue.submit(make_spec(priority=50))
    got = [await claimed_id(queue, WORKER) for _ in range(4)]
    assert got == [new_high, old_mid, new_mid, old_low]
    assert await claimed_id(queue, WORKER) is None


async def test_a_cancelled_head_leaves_a_stale_index_entry_that_the_claim_corrects(
    queue: Queue,
) -> None:
    await queue.claim(WORKER)
    first = await queue.submit(make_spec(priority=90, requirements={"gpu_memory_gb": 8}))
    second = await queue.submit(make_spec(priority=10, requirements={"gpu_memory_gb": 8}))
    other = await queue.submit(make_spec(priority=50))
    await queue.cancel(first)  # the class's listed score is now better than its head
    assert await claimed_id(queue, WORKER) == other
    assert await claimed_id(queue, WORKER) == second


# --- targeted wake-ups ---------------------------------------------------------------------


async def idle_slots(queue: Queue, caps: list[WorkerCapabilities], slots: int) -> None:
    for c in caps:
        for slot in range(slots):
            assert (await queue.claim(c, slot=slot)).claimed is None


async def wakes(
    redis: aioredis.Redis, queue: Queue, call: Any, workers: list[WorkerCapabilities]
) -> tuple[Any, list[tuple[str, int]]]:
    """Run ``call`` and collect the wake messages it sent to ``workers``: (worker, slot). Each
    worker's control channel is subscribed (sharded channels have no pattern form), so each
    SPUBLISH reaches a listener, as a live worker's would."""
    channels = [queue.keys.control_channel(c.worker_id) for c in workers]
    async with ShardSubscription(redis, channels) as subscription:
        result = await call
        got = []
        while message := await subscription.get(seconds=0.2):
            body = orjson.loads(message["data"])
            if body.get("type") == "wake":
                worker = message["channel"].decode().rsplit(":", 1)[1]
                got.append((worker, body["slot"]))
    return result, got


async def test_a_submit_wakes_one_idle_slot_not_all(queue: Queue, redis: aioredis.Redis) -> None:
    fleet = [make_caps(worker_id=f"w{i}") for i in range(100)]
    await idle_slots(queue, fleet, slots=2)
    _, woken = await wakes(redis, queue, queue.submit(make_spec()), fleet)
    assert len(woken) == 1
    _, woken = await wakes(redis, queue, queue.submit_many([make_spec()] * 5), fleet)
    assert len(woken) == 5
    assert len(set(woken)) == 5  # five different slots


async def test_the_woken_slot_can_run_the_job(queue: Queue, redis: aioredis.Redis) -> None:
    small = [make_caps(worker_id=f"s{i}", hardware={"gpu_memory_gb": 8}) for i in range(20)]
    big = make_caps(worker_id="big", hardware={"gpu_memory_gb": 80})
    await idle_slots(queue, [*small, big], slots=1)
    _, woken = await wakes(
        redis, queue, queue.submit(make_spec(requirements={"gpu_memory_gb": 40})), [*small, big]
    )
    assert woken == [("big", 0)]
    # No idle slot can run it now: nobody is woken (and nothing fails).
    _, woken = await wakes(
        redis, queue, queue.submit(make_spec(requirements={"gpu_memory_gb": 40})), [*small, big]
    )
    assert woken == []


async def test_a_busy_or_stopped_slot_is_not_woken(queue: Queue, redis: aioredis.Redis) -> None:
    a, b = make_caps(worker_id="a"), make_caps(worker_id="b")
    await idle_slots(queue, [a, b], slots=1)
    await queue.submit(make_spec())
    # Whichever was woken claims: it leaves the idle set; the other one is woken next.
    (first,) = [c for c in (a, b) if await claimed_id(queue, c) is not None][:1] or [None]
    assert first is not None
    second = b if first is a else a
    await queue.rest(second, slots=1)  # the other stops
    _, woken = await wakes(redis, queue, queue.submit(make_spec()), [a, b])
    assert woken == []


async def test_wake_commands_per_submit_do_not_grow_with_idle_workers(
    private_redis: aioredis.Redis, settings: QueueSettings
) -> None:
    costs = []
    for n in (10, 1000):
        queue = Queue(private_redis, settings.model_copy(update={"queue": f"wake{n}"}))
        await queue.functions.load()
        await idle_slots(queue, [make_caps(worker_id=f"w{i}") for i in range(n)], slots=1)
        await queue.submit(make_spec())  # the class appears
        _, cost = await commands(private_redis, queue.submit(make_spec()))
        costs.append(cost)
    print(f"\ncommands per submit with 10 and 1,000 idle slots: {costs}")
    assert costs[0] == costs[1]


@pytest.mark.parametrize("slot", ["-1", "x", "1.5"])
async def test_a_bad_slot_is_refused(queue: Queue, redis: aioredis.Redis, slot: str) -> None:
    from emp_core.errors import InvalidInput

    with pytest.raises(InvalidInput) as info:
        await queue.functions.claim("w1", ["simulation"], make_caps().wire, 1000, 100, 10, slot)  # type: ignore[arg-type]
    assert info.value.field == "slot"
