"""Cancel: a pending job leaves every index, a retrying one leaves the delayed set, a running
one's worker is told at once on its control channel; finished and unknown jobs are refused."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis
from core_factories import claim_one, make_caps, make_spec, stream_events

from emp_core.errors import Conflict, NotFound, StaleToken
from emp_core.queue.queue import Queue
from emp_core.redis.subscription import ShardSubscription


async def test_cancel_pending_leaves_every_index(queue: Queue, redis: aioredis.Redis) -> None:
    job_id = await queue.submit(make_spec(customer_id="acme", workflow_id="wf"))
    job = await queue.get(job_id)
    k = queue.keys
    index = [
        k.pending(job.class_id),
        k.pending_customer(job.class_id, "acme"),
        k.pending_workflow(job.class_id, "wf"),
    ]
    assert await queue.depth() == {"simulation": 1}

    assert await queue.cancel(job_id, "user changed their mind") == "pending"

    for key in index:
        assert await redis.exists(key) == 0, key
    assert await redis.hexists(k.classes("simulation"), job.class_id) is False
    assert await queue.depth() == {}
    job = await queue.get(job_id)
    assert (job.status, job.error) == ("cancelled", "user changed their mind")
    assert job.finished_at is not None
    assert await redis.ttl(k.job(job_id)) > 0
    assert (await queue.claim(make_caps())).claimed is None


async def test_cancel_one_of_a_class_keeps_the_others(queue: Queue, redis: aioredis.Redis) -> None:
    keep, drop = await queue.submit_many([make_spec(customer_id="acme") for _ in range(2)])
    class_id = (await queue.get(drop)).class_id
    await queue.cancel(drop)
    assert await redis.hexists(queue.keys.classes("simulation"), class_id) is True
    assert await redis.zrange(queue.keys.pending(class_id), 0, -1) == [keep.encode()]
    assert await queue.depth() == {"simulation": 1}
    assert (await claim_one(queue, make_caps())).id == keep


async def test_cancel_retrying(queue: Queue, redis: aioredis.Redis) -> None:
    job_id = await queue.submit(make_spec())
    await queue.fail(await claim_one(queue, make_caps()), "boom", delay_s=0.05)
    assert await queue.cancel(job_id) == "retrying"
    assert await redis.zscore(queue.keys.delayed(), job_id) is None
    await asyncio.sleep(0.1)
    assert (await queue.claim(make_caps(worker_id="w2"))).claimed is None
    assert await queue.reap() == (0, 0, 0)
    assert (await queue.get(job_id)).status == "cancelled"


async def test_cancel_running_tells_the_worker_at_once(queue: Queue, redis: aioredis.Redis) -> None:
    job_id = await queue.submit(make_spec())
    await redis.hset(queue.keys.worker("w1"), mapping={"state": "idle"})
    claimed = await claim_one(queue, make_caps(worker_id="w1"))
    await queue.progress(claimed, 30, "step 3 of 10")
    assert (await queue.get(job_id)).status == "running"

    async with ShardSubscription(redis, [queue.keys.control_channel("w1")]) as subscription:
        assert await queue.cancel(job_id, "stop") == "running"
        message = await subscription.get(seconds=2)
    assert message is not None
    assert orjson.loads(message["data"]) == {"type": "cancel", "job_id": job_id, "reason": "stop"}

    job = await queue.get(job_id)
    assert job.status == "cancelled"
    assert await redis.zscore(queue.keys.leases(), job_id) is None
    assert await redis.hget(queue.keys.worker("w1"), "state") == b"idle"
    with pytest.raises(StaleToken):
        await queue.complete(claimed, {"too": "late"})
    assert (await queue.get(job_id)).result is None
    assert await queue.reap() == (0, 0, 0)


async def test_cancel_claimed_not_yet_running(queue: Queue) -> None:
    job_id = await queue.submit(make_spec())
    await claim_one(queue, make_caps())
    assert await queue.cancel(job_id) == "claimed"
    assert (await queue.get(job_id)).status == "cancelled"


@pytest.mark.parametrize("finish", ["completed", "failed", "cancelled"])
async def test_cancel_of_a_finished_job_is_a_conflict(
    queue: Queue, redis: aioredis.Redis, finish: str
) -> None:
    job_id = await queue.submit(make_spec())
    if finish == "cancelled":
        await queue.cancel(job_id)
    else:
        claimed = await claim_one(queue, make_caps())
        if finish == "completed":
            await queue.complete(claimed, 1)
        else:
            await queue.fail(claimed, "boom", retryable=False)
    events_before = await stream_events(redis, queue.keys, job_id)
    with pytest.raises(Conflict) as info:
        await queue.cancel(job_id)
    assert not isinstance(info.value, StaleToken)
    assert finish in info.value.message
    assert (await queue.get(job_id)).status == finish
    assert await stream_events(redis, queue.keys, job_id) == events_before


async def test_cancel_of_an_unknown_job_is_not_found(queue: Queue) -> None:
    with pytest.raises(NotFound) as info:
        await queue.cancel("no-such-job")
    assert info.value.field == "job_id"
    assert "no-such-job" in info.value.message
