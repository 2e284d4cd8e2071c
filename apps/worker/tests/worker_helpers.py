"""Factories and small helpers shared by the worker's tests (a unique name: tests/ folders of
several packages share one import path)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from emp_core.jobs.job import Job, JobStatus
from emp_core.jobs.requirements import Requirements
from emp_core.queue.queue import Queue
from emp_core.redis import text_map
from emp_core.settings import QueueSettings
from emp_worker.config import WorkerSettings
from emp_worker.connectors import SimulationConnector
from emp_worker.failures import Classification

# Tests' workers keep their LoRA caches here (a folder per worker id), never in the home folder.
TEST_LORA_CACHES = Path(tempfile.gettempdir()) / "emp-test-loras"


def make_worker_settings(base: QueueSettings, **overrides: Any) -> WorkerSettings:
    """Settings for a fast test worker on the test's queue: burst, no step time, tiny backoff."""
    values: dict[str, Any] = {
        "redis_url": base.redis_url,
        "queue": base.queue,
        "worker_id": f"w{uuid.uuid4().hex[:8]}",
        "burst": True,
        "simulation_steps": 3,
        "simulation_step_time": 0,
        "retry_base_seconds": 0.01,
        "retry_avoid_grace_seconds": 0,
        "grace_seconds": 5,
        "lora_cache_dir": TEST_LORA_CACHES,
    }
    values.update(overrides)
    return WorkerSettings(**values)


def queue_backoff(message: str) -> Classification:
    """A classifier that retries everything with the queue's backoff, so that a test does not
    depend on what the error patterns say about its failure message."""
    return Classification(retryable=True, delay_s=None)


def make_job(
    *,
    job_id: str | None = None,
    service: str = "simulation",
    payload: dict[str, Any] | None = None,
    attempts: int = 1,
    max_attempts: int = 3,
    timeout_s: float = 60.0,
) -> Job:
    """A ``Job`` as a claim returns it, for running a connector without a queue."""
    return Job(
        id=job_id or uuid.uuid4().hex,
        service=service,
        status=JobStatus.RUNNING,
        priority=50,
        payload=payload or {},
        requirements=Requirements(),
        max_attempts=max_attempts,
        timeout_s=timeout_s,
        attempts=attempts,
        created_at=datetime.now(UTC),
        class_id="test",
    )


class Watched:
    """The simulation connector (three instant steps unless the payload asks for others), noting
    when a run starts and when it is cancelled."""

    def __init__(self, service: str = "simulation") -> None:
        self.service = service
        self.inner = SimulationConnector(steps=3, step_time=0)
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def run(self, job: Job, ctx: Any) -> Any:
        self.started.set()
        try:
            return await self.inner.run(job, ctx)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def job_events(redis: aioredis.Redis, queue: Queue, job_id: str) -> list[dict[str, str]]:
    """A job's event stream, oldest first, as dicts of text."""
    entries = await redis.xrange(queue.keys.events(job_id))
    return [text_map(fields) for _, fields in entries]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, every: float = 0.01
) -> None:
    """Wait until ``check`` holds; fail the test after ``within`` seconds. For observing another
    process or task from outside, never as the thing under test."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling another process is the point
            await asyncio.sleep(every)


def worker_env(settings: QueueSettings, **extra: str) -> dict[str, str]:
    """The environment for an ``emp-worker`` subprocess pointed at the test's Redis and queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMP_")}
    env.update(
        EMP_REDIS_URL=settings.redis_url,
        EMP_QUEUE=settings.queue,
        EMP_RETRY_BASE_SECONDS="0.01",
        EMP_RETRY_AVOID_GRACE_SECONDS="0",
        EMP_LORA_CACHE_DIR=str(TEST_LORA_CACHES),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def worker_command(*args: str) -> list[str]:
    """``emp-worker ARGS`` run with this interpreter (no ``uv run`` start-up per process)."""
    return [sys.executable, "-m", "emp_worker.main", *args]


def log_path(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"{name}.log"
