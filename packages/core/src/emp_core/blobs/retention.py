"""Job outputs leave the blob store with their job: when a job completes, its output paths are
recorded in ``Keys.outputs`` (a sorted set by deletion time, the job's retention from now) by the
worker, or for a worker on the gRPC transport by the API from the result it receives; ``sweep``
deletes those that are due, a bounded batch per call, and ``sweep_periodically`` runs it in every
Redis worker and every API process. Deleting is idempotent and
each path leaves the set only after its blob is gone, so any number of sweepers may run and a
crash in between only means the next sweep deletes it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from emp_core.queue.keys import Keys
from emp_core.redis import text

logger = logging.getLogger(__name__)

OUTPUTS_PREFIX = "outputs/"


class Deleter(Protocol):
    """What a sweep needs of a blob store."""

    async def delete(self, path: str) -> bool: ...


def output_paths(result: Any) -> list[str]:
    """The blob paths a job's result lists (``images[*].path`` under ``outputs/``)."""
    images = result.get("images") if isinstance(result, dict) else None
    if not isinstance(images, list):
        return []
    return [
        str(i["path"])
        for i in images
        if isinstance(i, dict) and str(i.get("path", "")).startswith(OUTPUTS_PREFIX)
    ]


async def keep_until(redis: Redis, keys: Keys, paths: Iterable[str], delete_at_ms: int) -> None:
    """Record ``paths`` for deletion at ``delete_at_ms``."""
    mapping = {path: delete_at_ms for path in paths}
    if mapping:
        await redis.zadd(keys.outputs(), mapping)


async def sweep(
    redis: Redis, keys: Keys, store: Deleter, *, now_ms: int | None = None, limit: int = 200
) -> int:
    """Delete up to ``limit`` outputs whose time has come; returns how many were removed."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    due: list[Any] = await redis.zrangebyscore(keys.outputs(), "-inf", now, start=0, num=limit)
    for raw in due:
        path = text(raw)
        await store.delete(path)
        await redis.zrem(keys.outputs(), raw)
    return len(due)


async def sweep_periodically(
    redis: Redis, keys: Keys, store: Deleter, owner: str, *, every_s: float = 60.0
) -> None:
    """Delete job outputs past their job's retention, every ``every_s`` (idempotent: every
    process may run it); ``owner`` names the process in its warnings."""
    await asyncio.sleep(random.uniform(0, every_s))
    while True:
        try:
            while await sweep(redis, keys, store) > 0:
                pass  # a backlog: the next batch at once
        except (RedisError, OSError) as exc:
            logger.warning("output sweep on %s failed: %s", owner, exc)
        except Exception:
            logger.exception("output sweep on %s failed", owner)
        await asyncio.sleep(every_s * random.uniform(0.8, 1.2))
