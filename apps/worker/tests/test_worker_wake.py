"""Idle workers block on Redis pub/sub: a submit reaches them at once, with no polling."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from worker_helpers import eventually, job_events, make_worker_settings, queue_backoff

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_core.queue.wake import Waker
from emp_worker.worker import Worker


async def test_idle_worker_wakes_on_submit(redis, queue: Queue, settings, capsys):
    # The fallback is a minute: a worker that polled would not see the job within the test.
    worker = Worker(
        make_worker_settings(settings, burst=False, idle_wait_seconds=60, slots=2), redis=redis
    )
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        await eventually(lambda: _claims_at_least(worker, 2))  # both slots idle now

        latencies = []
        for round_ in range(3):
            job_id = await queue.submit({"service": "simulation", "payload": {"steps": 1}})
            await eventually(_status_is(queue, job_id, JobStatus.COMPLETED), within=5)
            events = {e["type"]: int(e["at"]) for e in await job_events(redis, queue, job_id)}
            latencies.append(events["claimed"] - events["submitted"])
            assert worker.stats.completed == round_ + 1
        # Each submit wakes both idle slots once: one claims, the other finds nothing. Nothing
        # else claims while idle: 2 initial + 3 x (1 claim + 1 empty) + the winner's next claim.
        assert worker.stats.claims <= 2 + 3 * 3
        with capsys.disabled():
            print(f"\nsubmit-to-claimed with an idle worker (Redis clock): {latencies} ms")
    finally:
        worker.stop()
        await asyncio.wait_for(run, 10)


async def test_burst_worker_waits_for_a_due_retry_instead_of_polling(redis, queue: Queue, settings):
    payload = {"steps": 1, "fail_with": "flaky", "fail_times": 1}
    job_id = await queue.submit({"service": "simulation", "payload": payload})
    worker = Worker(
        make_worker_settings(settings, retry_base_seconds=0.2),
        redis=redis,
        classifier=queue_backoff,
    )

    stats = await worker.run()

    assert (await queue.get(job_id)).status is JobStatus.COMPLETED
    # claim (run, fail), claim (none: retry due in 0.2 s), claim (run), claim (none: done).
    # A poll loop would have claimed many more times during the 0.2 s backoff.
    assert stats.claims <= 5


async def _claims_at_least(worker: Worker, n: int) -> bool:
    return worker.stats.claims >= n


def _status_is(queue: Queue, job_id: str, status: JobStatus):
    async def check() -> bool:
        return (await queue.get(job_id)).status is status

    return check


# --- the Waker alone ------------------------------------------------------------------------


async def test_waker_rings_every_signal_on_a_wake_message(redis, queue: Queue):
    async with Waker(redis, queue.keys, ["simulation"], "w1") as waker:
        a, b = waker.signal(), waker.signal()
        await redis.spublish(queue.keys.wake_channel("other-service"), "x")  # not subscribed
        await redis.spublish(queue.keys.wake_channel("simulation"), "submit")
        assert await a.wait(5)
        assert await b.wait(5)
        assert waker.wakeups == 1
        a.clear()
        assert not await a.wait(0.01)


async def test_waker_sees_a_submit_published_right_after_start(redis, queue: Queue):
    caps = WorkerCapabilities(worker_id="w1", services=["simulation"])
    async with Waker(redis, queue.keys, ["simulation"], "w1") as waker:
        sig, other = waker.signal(0), waker.signal(1)
        sig.clear()
        assert (await queue.claim(caps, slot=0)).claimed is None  # slot 0 is idle now
        await queue.submit({"service": "simulation"})  # the Lua submit wakes that slot
        assert await sig.wait(5)
        assert not other.is_set()  # and that slot alone
        assert waker.wakeups == 1


async def test_a_targeted_wake_up_names_the_queue_whose_job_rang(redis, queue: Queue):
    """A worker serving two queues: the Lua's wake-up of slot 0 comes on one queue's control
    channel, and the slot's signal says which, so its claim starts there
    (``Queues.claim(first=...)``); any other ring names no queue."""
    other = Queue(redis, queue.settings.model_copy(update={"queue": queue.settings.queue + "-2"}))
    caps = WorkerCapabilities(worker_id="w1", services=["simulation"])
    async with Waker(redis, [queue.keys, other.keys], ["simulation"], "w1") as waker:
        sig = waker.signal(0)
        sig.clear()
        assert (await other.claim(caps, slot=0)).claimed is None  # slot 0 idle in the other
        await other.submit({"service": "simulation"})
        assert await sig.wait(5)
        assert sig.queue == other.keys.queue
        sig.clear()
        assert sig.queue is None
        waker.wake_all()  # a reconnect, a shutdown: no queue to prefer
        assert sig.is_set()
        assert sig.queue is None


async def test_waker_hands_control_messages_to_the_worker(redis, queue: Queue):
    received: list[dict] = []
    async with Waker(redis, queue.keys, ["simulation"], "w1", on_control=received.append) as waker:
        sig = waker.signal()
        sig.clear()
        channel = queue.keys.control_channel("w1")
        await redis.spublish(channel, b"not json")
        await redis.spublish(channel, orjson.dumps([1, 2]))
        await redis.spublish(channel, orjson.dumps({"type": "cancel", "job_id": "j1"}))
        await redis.spublish(queue.keys.control_channel("w2"), orjson.dumps({"type": "cancel"}))
        await eventually(lambda: _non_empty(received), within=5)
        await asyncio.sleep(0.05)  # let the other worker's message arrive, were it subscribed
    assert received == [{"type": "cancel", "job_id": "j1"}]
    assert not sig.is_set()  # control messages are not wake-ups


async def test_waker_resubscribes_after_its_connection_is_killed(redis, queue: Queue):
    async with Waker(redis, queue.keys, ["simulation"], "w1") as waker:
        sig = waker.signal()
        killed = await redis.client_kill_filter(_type="pubsub")
        assert killed >= 1
        # The reconnect rings the doorbell (messages may have been missed meanwhile) ...
        assert await sig.wait(10)
        sig.clear()
        # ... and wake-ups flow again once resubscribed.
        await eventually(lambda: _published_to_someone(redis, queue), within=10, every=0.05)
        assert await sig.wait(5)


async def _non_empty(items: list) -> bool:
    return bool(items)


async def _published_to_someone(redis, queue: Queue) -> bool:
    return bool(await redis.spublish(queue.keys.wake_channel("simulation"), "x"))


@pytest.mark.parametrize("seconds", [0.0, 0.01])
async def test_wake_signal_times_out(seconds):
    from emp_core.queue.wake import WakeSignal

    assert await WakeSignal().wait(seconds) is False
