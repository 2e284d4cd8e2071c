"""The Lua library derives some keys and channels from the key base and a job's stored fields
(claim, cancel, reap, requeue); they must be exactly the names ``emp_core.queue.keys`` gives. A key
written under any other spelling would show up here as a stray key or a missing one."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from core_factories import (
    claim_one,
    make_caps,
    make_spec,
    queue_keys,
    redis_now_ms,
    with_settings,
)

from emp_core.queue.keys import Keys
from emp_core.queue.queue import Queue
from emp_core.queue.stats import minute_of
from emp_core.redis.subscription import ShardSubscription
from emp_core.settings import QueueSettings


def test_templates_share_one_hash_tag() -> None:
    k = Keys(prefix="emp", queue="q1")
    names = [
        k.job("j"), k.events("j"), k.seq(), k.fence(), k.classes("s"), k.pending("c"),
        k.pending_customer("c", "u"), k.pending_workflow("c", "w"), k.pending_count(),
        k.workflow("w"), k.delayed(), k.leases(), k.dead(), k.finished(), k.customer_jobs("u"),
        k.worker("w"), k.worker_loras("w"), k.lora_holders("0" * 64), k.workers(),
        k.wake_channel("s"), k.control_channel("w"), k.pending_customers("c", 50),
        k.fair_tags("s"), k.fair_weights(), k.events_channel(), k.minute_stats(29_000_000),
    ]  # fmt: skip
    assert len(set(names)) == len(names)
    assert all(n.startswith("emp:{q1}:") for n in names)


async def test_lua_keys_and_channels_are_the_ones_keys_py_names(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, lease_seconds=0.05))
    k = q.keys
    # Sharded channels have no pattern form: listen on every channel the library may publish on;
    # a misspelt one would leave its expected message missing below.
    candidates = [k.events_channel(), k.control_channel("w1"), k.control_channel("w2"),
                  k.wake_channel("simulation")]  # fmt: skip
    subscription = ShardSubscription(redis, candidates)
    await subscription.open()
    await redis.hset(k.worker("w1"), mapping={"state": "idle"})
    w1 = make_caps(worker_id="w1", hardware={"gpu_memory_gb": 16})
    # The minute counters (Keys.minute_stats) are checked apart: which minutes a run touches
    # depends on the clock.
    first_minute = minute_of(await redis_now_ms(redis))
    minutes_seen: set[str] = set()

    async def keys_now() -> set[str]:
        found = await queue_keys(redis, k)
        minutes_seen.update(key for key in found if key.startswith(f"{k.base}:stats:"))
        return found - minutes_seen

    # Submit: the job, its index entries and the workflow and customer records.
    job_id = await q.submit(
        make_spec(customer_id="acme", workflow_id="wf", requirements={"gpu_memory_gb": 8})
    )
    cid = (await q.get(job_id)).class_id
    record = {k.job(job_id), k.events(job_id), k.seq(), k.pending_count(), k.workflow("wf"),
              k.customer_jobs("acme"), k.worker("w1")}  # fmt: skip
    pending = {k.classes("simulation"), k.pending(cid), k.pending_customer(cid, "acme"),
               k.pending_workflow(cid, "wf"), k.pending_customers(cid, 50)}  # fmt: skip
    assert await keys_now() == record | pending

    # Claim: the Lua removes the job from index keys it derives itself, registers the worker's
    # capability profile (the claim's index) and charges the customer's fair share.
    await claim_one(q, w1)
    (pid,) = [p.decode() for p in await redis.zrange(k.profiles_seen("simulation"), 0, -1)]
    profile = {k.profiles("simulation"), k.profiles_seen("simulation")}
    record |= profile | {k.fair_tags("simulation")}
    pending.add(k.ready("simulation", pid))
    assert await keys_now() == record | {k.fence(), k.leases()}
    assert await redis.hget(k.worker("w1"), "state") == b"busy"

    # Reap: the Lua puts it back into index keys it derives, and idles the worker by its key.
    await asyncio.sleep(0.1)
    assert await q.reap() == (1, 0, 0)
    assert await keys_now() == record | pending | {k.fence()}
    assert await redis.hget(k.worker("w1"), "state") == b"idle"

    # Fail to the delayed set, promote, claim again; then cancel while running.
    await q.fail(await claim_one(q, w1), "boom", delay_s=0)
    assert await keys_now() == record | {k.fence(), k.delayed()}
    await q.reap()
    await redis.hset(k.worker("w2"), mapping={"state": "idle"})
    again = await claim_one(q, make_caps(worker_id="w2", hardware={"gpu_memory_gb": 16}))
    await q.progress(again, 1)
    await q.cancel(job_id)
    assert await redis.hget(k.worker("w2"), "state") == b"idle"
    assert await redis.zscore(k.finished(), job_id) is not None  # the archive outbox

    # A second job fails for good: the dead set.
    dead = await q.submit(make_spec(max_attempts=1))
    await q.fail(await claim_one(q, w1), "boom")
    # It has no owner: it is indexed under the empty customer, where admins list ownerless jobs.
    assert await keys_now() == record | {
        k.fence(), k.job(dead), k.events(dead), k.dead(), k.worker("w2"), k.finished(),
        k.customer_jobs(""),
    }  # fmt: skip

    last_minute = minute_of(await redis_now_ms(redis))
    assert minutes_seen
    assert minutes_seen <= {k.minute_stats(m) for m in range(first_minute, last_minute + 1)}

    channels: set[str] = set()
    while message := await subscription.get(seconds=0.2):
        channels.add(message["channel"].decode())
    await subscription.aclose()
    assert channels == {k.events_channel(), k.control_channel("w2")}


async def test_keys_of_two_queues_never_meet(redis: aioredis.Redis, queue: Queue) -> None:
    other = Queue(redis, queue.settings.model_copy(update={"queue": queue.settings.queue + "b"}))
    await queue.submit(make_spec())
    assert (await other.claim(make_caps())).claimed is None
    # Only the claiming worker's profile is registered in the other queue; no job key is.
    assert await queue_keys(redis, other.keys) == {
        other.keys.profiles("simulation"), other.keys.profiles_seen("simulation"),
    }  # fmt: skip
