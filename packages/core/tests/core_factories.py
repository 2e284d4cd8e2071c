"""Factories and small helpers shared by the core's tests (keyword-only, with defaults).

The module has a package-specific name because test folders have no ``__init__.py``: a plain
``factories.py`` here and in another package's tests would shadow one another.
"""

from __future__ import annotations

import re
from typing import Any

import redis.asyncio as aioredis

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import JobSpec
from emp_core.patterns import Category, MatchKind, PatternRule
from emp_core.queue.keys import Keys
from emp_core.queue.queue import ClaimedJob, Queue
from emp_core.settings import QueueSettings


def make_spec(*, service: str = "simulation", priority: int = 50, **kw: Any) -> JobSpec:
    """A valid job; keyword arguments are JobSpec fields."""
    return JobSpec(service=service, priority=priority, **kw)


def make_caps(
    *, worker_id: str = "w1", services: list[str] | None = None, **kw: Any
) -> WorkerCapabilities:
    """A worker of the simulation service with nothing else, unless told."""
    return WorkerCapabilities(worker_id=worker_id, services=services or ["simulation"], **kw)


async def cold_library(queue: Queue) -> None:
    """Install the library afresh, its in-Lua caches (decoded classes and worker profiles)
    empty: ``Functions.load`` skips a load of the very code Redis holds, keeping them, so a test
    that counts one claim's commands flushes first (a warm cache saves reads, so two counts
    compared must start alike)."""
    await queue.redis.function_flush()
    await queue.functions.load()


def with_settings(settings: QueueSettings, **changes: Any) -> QueueSettings:
    """The same queue (same keys) with other tunables."""
    return settings.model_copy(update=changes)


async def claim_one(queue: Queue, caps: WorkerCapabilities) -> ClaimedJob:
    """Claim, failing the test when nothing is claimable."""
    result = await queue.claim(caps)
    assert result.claimed is not None, f"worker {caps.worker_id} claimed nothing"
    return result.claimed


async def claimed_id(queue: Queue, caps: WorkerCapabilities) -> str | None:
    result = await queue.claim(caps)
    return None if result.claimed is None else result.claimed.id


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


async def queue_keys(redis: aioredis.Redis, keys: Keys) -> set[str]:
    """Every key of one queue (its keys all start with ``keys.base``)."""
    pattern = glob_escape(keys.base) + ":*"
    return {k.decode() async for k in redis.scan_iter(match=pattern, count=1000)}


async def redis_now_ms(redis: aioredis.Redis) -> int:
    """Redis server time (the clock the library uses), in ms."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def stream_events(redis: aioredis.Redis, keys: Keys, job_id: str) -> list[dict[str, str]]:
    """A job's event stream as decoded field dicts, oldest first."""
    entries = await redis.xrange(keys.events(job_id))
    return [
        {k.decode(): v.decode() for k, v in fields.items()} | {"id": entry_id.decode()}
        for entry_id, fields in entries
    ]


async def event_types(redis: aioredis.Redis, keys: Keys, job_id: str) -> list[str]:
    return [e["type"] for e in await stream_events(redis, keys, job_id)]


def make_rule(**overrides: Any) -> PatternRule:
    fields: dict[str, Any] = {
        "id": "p1", "name": "p1", "match_kind": MatchKind.SUBSTRING, "pattern": "boom",
        "category": Category.UNKNOWN, "retryable": True, "user_message": "boom",
    }  # fmt: skip
    return PatternRule(**{**fields, **overrides})
