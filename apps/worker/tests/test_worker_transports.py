"""The worker's simulation suite, one body per test, run over both transports: Redis itself and
the API's gRPC ``WorkerService`` (a real ``emp-api`` process, see ``grpc_api.py``).

Over gRPC the worker is given a Redis URL where nothing listens, so a test passes only if the
whole loop (claims, progress, results, failures, leases, cancels, wake-ups) goes through the
stream. Each test runs a service name of its own, so tests sharing the API's queue never claim
each other's jobs. The tests read what is left in Redis, as the other worker tests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from grpc_api import GrpcApi, grpc_api
from worker_helpers import (
    Watched,
    eventually,
    job_events,
    make_worker_settings,
    queue_backoff,
    worker_command,
    worker_env,
)

from emp_core.jobs.job import JobStatus
from emp_core.patterns import Category, MatchKind, PatternRule, Snapshot
from emp_core.patterns.store import publish_snapshot
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_worker.connectors import SimulationConnector
from emp_worker.failures import classify
from emp_worker.worker import Worker

LEASE = 1.0
NOWHERE = "redis://127.0.0.1:1/0"  # what a gRPC worker is told Redis is: nothing listens


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcApi]:
    with grpc_api(redis_url, tmp_path_factory.mktemp("api"), lease_seconds=LEASE) as running:
        yield running


@dataclass
class Harness:
    """One transport: the queue the test reads, and workers of the test's own service."""

    transport: str
    queue: Queue
    redis: aioredis.Redis
    service: str
    api: GrpcApi | None = None

    async def submit(self, count: int = 1, **spec: Any) -> list[str]:
        return await self.queue.submit_many([{"service": self.service, **spec}] * count)

    def worker(
        self, connector: Any = None, *, classifier: Any = queue_backoff, **overrides: Any
    ) -> Worker:
        values: dict[str, Any] = {"services": [self.service], "lease_seconds": LEASE}
        if self.api is not None:
            values.update(
                transport="grpc", api_address=self.api.address, api_token=self.api.token,
                redis_url=NOWHERE,
            )  # fmt: skip
        values.update(overrides)
        settings = make_worker_settings(self.queue.settings, **values)
        connector = connector or SimulationConnector(steps=3, step_time=0)
        return Worker(
            settings,
            redis=self.redis if self.api is None else None,
            connectors={self.service: connector},
            classifier=classifier,
        )


@pytest.fixture(params=["redis", "grpc"])
async def harness(request: pytest.FixtureRequest, redis: aioredis.Redis, redis_url: str) -> Harness:
    api: GrpcApi | None = None
    name = f"t{uuid.uuid4().hex[:12]}"
    if request.param == "grpc":  # the API starts only when a gRPC test runs
        api = request.getfixturevalue("api")
        name = api.queue
    queue = Queue(redis, QueueSettings(redis_url=redis_url, queue=name, lease_seconds=LEASE))
    await queue.functions.load()
    return Harness(request.param, queue, redis, f"sim{uuid.uuid4().hex[:8]}", api)


async def test_claim_progress_complete(harness: Harness) -> None:
    ids = [(await harness.submit(payload={"steps": 3, "seed": i}))[0] for i in range(5)]
    worker = harness.worker()

    stats = await worker.run()

    assert (stats.completed, stats.failed, stats.lost) == (5, 0, 0)
    for i, job_id in enumerate(ids):
        job = await harness.queue.get(job_id)
        assert (job.status, job.attempts, job.worker_id) == (JobStatus.COMPLETED, 1, worker.id)
        assert (job.result["steps"], job.result["seed"]) == (3, i)
        events = await job_events(harness.redis, harness.queue, job_id)
        assert [e["type"] for e in events] == [
            "submitted", "claimed", "progress", "progress", "progress", "completed",
        ]  # fmt: skip
        assert events[2]["message"] == "step 1 of 3"


async def test_failure_is_retried_then_succeeds(harness: Harness) -> None:
    payload = {"steps": 2, "fail_with": "CUDA out of memory", "fail_times": 2}
    (job_id,) = await harness.submit(payload=payload, max_attempts=3)

    stats = await harness.worker().run()

    job = await harness.queue.get(job_id)
    assert (job.status, job.attempts, job.result["attempt"]) == (JobStatus.COMPLETED, 3, 3)
    assert (stats.retried, stats.completed, stats.failed) == (2, 1, 0)
    events = await job_events(harness.redis, harness.queue, job_id)
    retries = [e for e in events if e["type"] == "retrying"]
    assert [e["error"] for e in retries] == ["CUDA out of memory"] * 2


async def test_dead_letter_after_max_attempts(harness: Harness) -> None:
    payload = {"steps": 2, "fail_with": "CUDA out of memory"}
    (job_id,) = await harness.submit(payload=payload, max_attempts=2)

    stats = await harness.worker().run()

    job = await harness.queue.get(job_id)
    assert (job.status, job.attempts, job.error) == (JobStatus.FAILED, 2, "CUDA out of memory")
    assert await harness.redis.zscore(harness.queue.keys.dead(), job_id) is not None
    assert (stats.retried, stats.failed) == (1, 1)


async def test_cancel_stops_the_connector_and_an_idle_slot_is_woken(harness: Harness) -> None:
    connector = Watched(harness.service)
    # A long idle wait: only a wake-up can bring the next job to the slot quickly.
    worker = harness.worker(connector, burst=False, idle_wait_seconds=60)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        # Listed in the registry while it runs (over gRPC, by the API on its behalf).
        assert await harness.redis.exists(harness.queue.keys.worker(worker.id))
        (job_id,) = await harness.submit(payload={"steps": 1000, "step_time": 0.05})
        await asyncio.wait_for(connector.started.wait(), 10)

        assert await harness.queue.cancel(job_id, "changed my mind") in {"claimed", "running"}

        await asyncio.wait_for(connector.cancelled.wait(), 10)
        job = await harness.queue.get(job_id)
        assert (job.status, job.error) == (JobStatus.CANCELLED, "changed my mind")
        types = [e["type"] for e in await job_events(harness.redis, harness.queue, job_id)]
        assert types[-1] == "cancelled"
        assert "completed" not in types

        # The slot is idle again, and the next job wakes it (no polling: the idle wait is 60 s).
        (next_id,) = await harness.submit(payload={"steps": 1})
        await eventually(lambda: _status_is(harness.queue, next_id, JobStatus.COMPLETED))
        assert (worker.stats.cancelled, worker.stats.lost) == (1, 0)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 20)
    await eventually(lambda: _deregistered(harness, worker.id))


async def _deregistered(harness: Harness, worker_id: str) -> bool:
    return not await harness.redis.exists(harness.queue.keys.worker(worker_id))


async def test_lease_loss_stops_the_connector(harness: Harness) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    class Quiet:
        """Reports no progress, so only the lease renewals can notice the job is gone."""

        service = harness.service

        async def run(self, job: Any, ctx: Any) -> Any:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    (job_id,) = await harness.submit()
    worker = harness.worker(Quiet())
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 30)
    # As if the reaper had handed the job to another worker: the fencing token moved on.
    await harness.redis.hset(harness.queue.keys.job(job_id), "token", "999999")

    await asyncio.wait_for(cancelled.wait(), 10)  # at the next renewal (every lease / 3)
    stats = await asyncio.wait_for(run, 20)

    assert stats.lost == 1
    assert (stats.completed, stats.failed, stats.retried) == (0, 0, 0)
    types = [e["type"] for e in await job_events(harness.redis, harness.queue, job_id)]
    assert not {"completed", "retrying", "failed"} & set(types)


async def test_shutdown_hands_a_running_job_back(harness: Harness) -> None:
    connector = Watched(harness.service)
    worker = harness.worker(connector, burst=False)
    run = asyncio.create_task(worker.run())
    (job_id,) = await harness.submit(payload={"steps": 1000, "step_time": 0.05})
    await asyncio.wait_for(connector.started.wait(), 30)

    worker.stop(force=True)
    stats = await asyncio.wait_for(run, 20)

    assert stats.released == 1
    job = await harness.queue.get(job_id)
    assert job.status is JobStatus.PENDING
    types = [e["type"] for e in await job_events(harness.redis, harness.queue, job_id)]
    assert "failed" not in types
    assert job.attempts == 0  # released, not failed: the attempt is given back

    class Instant:
        service = harness.service

        async def run(self, job: Any, ctx: Any) -> Any:
            return {"ok": True}

    assert (await harness.worker(Instant()).run()).completed == 1
    assert (await harness.queue.get(job_id)).status is JobStatus.COMPLETED


async def _status_is(queue: Queue, job_id: str, status: JobStatus) -> bool:
    return (await queue.get(job_id)).status is status


def test_a_token_the_api_refuses_stops_the_worker(api: GrpcApi, settings: QueueSettings) -> None:
    done = subprocess.run(
        worker_command("--burst", "--transport", "grpc", "--api", api.address),
        env=worker_env(settings, EMP_API_TOKEN="not-a-token"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"the API's gRPC server at {api.address} refused the token" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(params=["redis", "grpc"])
async def fresh_harness(
    request: pytest.FixtureRequest, redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    """A harness whose gRPC side is an API of its own: one whose error patterns nobody has
    read yet, so a snapshot published now is the one it starts with (no announcement race)."""
    with contextlib.ExitStack() as stack:
        api, name = None, f"t{uuid.uuid4().hex[:12]}"
        if request.param == "grpc":
            api = stack.enter_context(grpc_api(redis_url, tmp_path, lease_seconds=LEASE))
            name = api.queue
        queue = Queue(redis, QueueSettings(redis_url=redis_url, queue=name, lease_seconds=LEASE))
        await queue.functions.load()
        yield Harness(request.param, queue, redis, "simulation", api)


async def test_the_error_patterns_classify_a_failure(fresh_harness: Harness) -> None:
    # Over gRPC the worker holds no patterns: it leaves the failure undecided and the API
    # classifies it with its own copy, as a Redis worker classifies its own.
    harness = fresh_harness
    rule = PatternRule(
        id="pat-policy", name="policy", match_kind=MatchKind.SUBSTRING,
        pattern="flagged by policy", category=Category.CONTENT_REFUSED, retryable=False,
        user_message="Please change the prompt.", connector=None,
    )  # fmt: skip
    await publish_snapshot(harness.redis, harness.queue.keys, Snapshot.build(7, [rule]))
    payload = {"steps": 1, "fail_with": "the prompt was flagged by policy"}
    (job_id,) = await harness.submit(payload=payload, max_attempts=3)

    stats = await harness.worker(classifier=classify).run()

    job = await harness.queue.get(job_id)
    # Not retryable: failed at the first attempt although two more were allowed.
    assert (job.status, job.attempts, stats.failed) == (JobStatus.FAILED, 1, 1)
    assert (job.error_category, job.error_pattern_id, job.error_user_message) == (
        "content_refused", "pat-policy", "Please change the prompt.",
    )  # fmt: skip
    day = datetime.now(UTC).date().isoformat()
    counts = await harness.redis.hgetall(harness.queue.keys.pattern_matches(day))
    assert counts[b"c|pat-policy|simulation"] == b"1"


async def test_a_grpc_worker_connects_again_after_the_api_restarts(
    redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    with grpc_api(redis_url, tmp_path, lease_seconds=LEASE) as first:
        queue = Queue(redis, QueueSettings(redis_url=redis_url, queue=first.queue))
        harness = Harness("grpc", queue, redis, "simulation", first)
        worker = harness.worker(burst=False, idle_wait_seconds=60)
        run = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.ready.wait(), 30)
            (before,) = await harness.submit(payload={"steps": 1})
            await eventually(lambda: _status_is(queue, before, JobStatus.COMPLETED), within=30)
        except BaseException:
            worker.stop(force=True)
            raise
    # The API is gone (its stream with it); the same API comes back on the same port.
    try:
        with grpc_api(redis_url, tmp_path, lease_seconds=LEASE, again=first):
            (after,) = await harness.submit(payload={"steps": 1})
            # The worker's slot backs off while nothing answers, then opens a new stream.
            await eventually(lambda: _status_is(queue, after, JobStatus.COMPLETED), within=60)
            assert (await queue.get(after)).worker_id == worker.id
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)


async def test_the_loras_a_worker_holds_are_advertised_and_steer_its_claims(
    harness: Harness, file_server: Any, tmp_path: Path
) -> None:
    """The cache's hashes reach the worker's set in Redis (over gRPC through the stream, which
    the API writes), the claim's LoRA affinity then prefers a younger job that uses them, and a
    clean exit withdraws them."""
    data = os.urandom(1000)
    sha = hashlib.sha256(data).hexdigest()
    file_server.files[f"/b/{sha}"] = data
    style = {
        "id": "id-style", "name": "style.safetensors", "sha256": sha, "size": len(data),
        "scope": "user", "url": file_server.url(f"/b/{sha}?sig=x"),
    }  # fmt: skip
    worker = harness.worker(lora_cache_dir=tmp_path / "loras", burst=False)
    runner = asyncio.create_task(worker.run())
    key = harness.queue.keys.worker_loras(worker.id)
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        (first,) = await harness.submit(payload={"steps": 1}, loras=[style])

        async def advertised() -> bool:
            return {m.decode() for m in await harness.redis.smembers(key)} == {sha}

        await eventually(advertised)
        assert await harness.redis.pttl(key) > 0
        # Submitted together (one atomic call, so both are pending when the idle worker is
        # woken): an older job without LoRAs and a younger one using the held file.
        plain, styled = await harness.queue.submit_many(
            [{"service": harness.service, "payload": {"steps": 1}},
             {"service": harness.service, "payload": {"steps": 1}, "loras": [style]}]
        )  # fmt: skip

        async def done() -> bool:
            jobs = [await harness.queue.get(i) for i in (first, plain, styled)]
            return all(j.status is JobStatus.COMPLETED for j in jobs)

        await eventually(done)
        a, b = await harness.queue.get(plain), await harness.queue.get(styled)
        assert a.claimed_at is not None
        assert b.claimed_at is not None
        assert b.claimed_at <= a.claimed_at, "the job using a held LoRA goes first"
        worker.stop()
        await runner
    finally:
        if not runner.done():
            runner.cancel()

    async def withdrawn() -> bool:
        return not await harness.redis.exists(key)

    await eventually(withdrawn)
