"""events.py: replay a job's stream, then follow it live, ending after the terminal event."""

from __future__ import annotations

import asyncio

import pytest

from emp_core.errors import NotFound
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.events import EventType, JobEvent, follow, replay
from emp_core.queue.queue import Queue
from emp_core.redis.subscription import ShardSubscription


def _caps() -> WorkerCapabilities:
    return WorkerCapabilities(worker_id="w-events", services=["simulation"])


async def test_late_follower_replays_then_follows_live(queue: Queue) -> None:
    job_id = await queue.submit({"service": "simulation"})
    claimed = (await queue.claim(_caps())).claimed
    assert claimed is not None
    await queue.progress(claimed, 25, "a quarter")

    seen: list[JobEvent] = []
    got_first_two = asyncio.Event()

    async def consume() -> None:
        async for event in follow(queue.redis, queue.keys, job_id, block_ms=200):
            seen.append(event)
            if len(seen) == 3:
                got_first_two.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first_two.wait(), 5)  # the replayed part
    await queue.progress(claimed, 75, "three quarters")
    await queue.complete(claimed, {"ok": True})
    await asyncio.wait_for(task, 5)  # ends by itself after the terminal event

    assert [e.type for e in seen] == [
        EventType.SUBMITTED, EventType.CLAIMED, EventType.PROGRESS, EventType.PROGRESS,
        EventType.COMPLETED,
    ]  # fmt: skip
    assert [e.progress for e in seen if e.type == EventType.PROGRESS] == [25, 75]
    assert seen[1].worker_id == "w-events"
    assert len({e.event_id for e in seen}) == len(seen)


async def test_replay_after_an_id_is_exclusive(queue: Queue) -> None:
    job_id = await queue.submit({"service": "simulation"})
    await queue.cancel(job_id, "not needed")
    events = await replay(queue.redis, queue.keys, job_id)
    assert [e.type for e in events] == [EventType.SUBMITTED, EventType.CANCELLED]
    assert events[1].reason == "not needed"
    assert await replay(queue.redis, queue.keys, job_id, after=events[0].event_id) == events[1:]


async def test_published_message_decodes_like_the_stream_entry(queue: Queue) -> None:
    async with ShardSubscription(queue.redis, [queue.keys.events_channel()]) as subscription:
        job_id = await queue.submit({"service": "simulation"})
        message = await subscription.get(seconds=2)
    assert message is not None
    published = JobEvent.from_message(message["data"])
    (stored,) = await replay(queue.redis, queue.keys, job_id)
    assert published.service == "simulation"
    assert published == stored  # the stream carries the service too


async def test_follow_unknown_job_is_not_found(queue: Queue) -> None:
    with pytest.raises(NotFound):
        async for _ in follow(queue.redis, queue.keys, "nope"):
            pass
