"""The worker's side of LoRAs (ADR-010): fetch a claimed job's LoRAs into the cache before its
connector runs, and advertise the hashes the cache holds so the claim can prefer this worker for
jobs that use them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pydantic import JsonValue
from redis.asyncio import Redis
from redis.exceptions import RedisError

from emp_core.jobs.job import Job
from emp_core.loras.advert import advertise_loras
from emp_core.loras.cache import ADVERTISE_LIMIT, LoraCache
from emp_core.loras.download import LoraFetchError
from emp_core.queue.keys import Keys
from emp_worker.connectors.base import Abort, Connector, Retry
from emp_worker.running import QueueJobContext

logger = logging.getLogger(__name__)


async def run_with_loras(
    connector: Connector, job: Job, ctx: QueueJobContext, cache: LoraCache
) -> JsonValue:
    """Pin and fetch the job's LoRAs (reporting download progress as the job's), run the
    connector with their local paths, unpin. A LoRA that is gone fails the job for good."""
    if not job.loras:
        return await connector.run(job, ctx)

    async def progress(message: str) -> None:
        await ctx.progress(0, message)

    async with contextlib.AsyncExitStack() as stack:
        try:
            ctx.lora_paths = await stack.enter_async_context(cache.use(job.loras, progress))
        except LoraFetchError as exc:
            if exc.retryable:
                raise Retry(exc.message) from None
            raise Abort(exc.message) from None
        return await connector.run(job, ctx)


async def advertise_periodically(
    cache: LoraCache, redis: Redis, keys: Keys, worker_id: str, *, every_s: float, ttl_s: float
) -> None:
    """Publish the cache's hashes (most recently used first, bounded) whenever they change, and
    every ``every_s`` to keep the advertisement's TTL alive."""
    ttl_ms = max(1, int(ttl_s * 1000))
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every_s):
                await cache.changed.wait()
        cache.changed.clear()
        try:
            await advertise_loras(
                redis, keys, worker_id, cache.held(ADVERTISE_LIMIT), ttl_ms=ttl_ms
            )
        except (RedisError, OSError) as exc:
            logger.warning("worker %s could not advertise its LoRAs: %s", worker_id, exc)
