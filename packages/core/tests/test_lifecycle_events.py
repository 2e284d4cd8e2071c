"""Every change of a job is appended to its stream (``Keys.events``) and published on the
queue's channel (``Keys.events_channel``), with the same event id in both."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
import redis.asyncio as aioredis
from core_factories import claim_one, make_caps, make_spec, stream_events, with_settings

from emp_core.queue.queue import Queue
from emp_core.redis.subscription import ShardSubscription
from emp_core.settings import QueueSettings


async def run_every_transition(queue: Queue, short: Queue) -> dict[str, list[str]]:
    """Drive one job through each path; the expected event types per job."""
    w1, w2 = make_caps(worker_id="w1"), make_caps(worker_id="w2")

    done = await queue.submit(make_spec())
    first = await claim_one(queue, w1)
    await queue.progress(first, 40, "denoising")
    await queue.fail(first, "CUDA out of memory", delay_s=0)
    second = await claim_one(queue, w2)  # promotes the retry, then claims it
    await queue.progress(second, 100)
    await queue.complete(second, {"images": 1})

    cancelled = await queue.submit(make_spec())
    await queue.cancel(cancelled, "not needed")

    failed = await queue.submit(make_spec(max_attempts=1))
    await queue.fail(await claim_one(queue, w1), "bad prompt")

    reaped = await short.submit(make_spec())
    await claim_one(short, w1)
    await asyncio.sleep(0.1)
    await short.reap()

    return {
        done: ["submitted", "claimed", "progress", "retrying", "requeued", "claimed", "progress",
               "completed"],
        cancelled: ["submitted", "cancelled"],
        failed: ["submitted", "claimed", "failed"],
        reaped: ["submitted", "claimed", "requeued"],
    }  # fmt: skip


async def test_every_transition_is_streamed_and_published(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    short = Queue(redis, with_settings(settings, lease_seconds=0.05))
    async with ShardSubscription(redis, [queue.keys.events_channel()]) as subscription:
        expected = await run_every_transition(queue, short)
        published: dict[str, list[dict[str, Any]]] = defaultdict(list)
        while message := await subscription.get(seconds=0.5):
            event = orjson.loads(message["data"])
            published[event["job_id"]].append(event)

    assert set(published) == set(expected)
    for job_id, types in expected.items():
        streamed = await stream_events(redis, queue.keys, job_id)
        assert [e["type"] for e in streamed] == types, job_id
        assert [e["type"] for e in published[job_id]] == types, job_id
        assert [e["event_id"] for e in published[job_id]] == [e["id"] for e in streamed]
        # Replayed events say what they are for, as published ones do (submitted and claimed
        # included: a socket that connects late sees those from the stream).
        assert {e["service"] for e in streamed} == {"simulation"}, job_id
        for event in published[job_id]:
            assert event["service"] == "simulation"
            assert int(event["at"]) > 0
            assert event["status"] in {"pending", "claimed", "running", "retrying", "completed",
                                       "failed", "cancelled"}  # fmt: skip


async def test_event_fields_say_what_happened(queue: Queue, redis: aioredis.Redis) -> None:
    job_id = await queue.submit(make_spec())
    claimed = await claim_one(queue, make_caps(worker_id="w1"))
    await queue.progress(claimed, 42.5, "half way")
    await queue.fail(claimed, "CUDA out of memory", delay_s=0)
    events = {e["type"]: e for e in await stream_events(redis, queue.keys, job_id)}

    assert events["submitted"]["status"] == "pending"
    assert (events["claimed"]["worker_id"], events["claimed"]["attempt"]) == ("w1", "1")
    assert events["progress"]["status"] == "running"
    assert (events["progress"]["progress"], events["progress"]["message"]) == ("42.5", "half way")
    assert events["retrying"]["error"] == "CUDA out of memory"
    assert events["retrying"]["status"] == "retrying"


async def test_the_stream_is_capped(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    capped = Queue(redis, with_settings(settings, events_maxlen=10))
    job_id = await capped.submit(make_spec())
    claimed = await claim_one(capped, make_caps())
    for i in range(500):
        await capped.progress(claimed, i / 5)
    # MAXLEN ~ trims whole stream nodes, so the length stays near the cap, never near 500.
    assert await redis.xlen(capped.keys.events(job_id)) < 200
