"""The worker's background loops besides its slots: keeping its registry entry alive and
running the shared reaper."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.queue.reaper import Reaper
from emp_core.registry.workers import WorkerRegistry

logger = logging.getLogger(__name__)


async def refresh_registration(
    registry: WorkerRegistry,
    caps: WorkerCapabilities,
    *,
    slots: int,
    every_s: float,
    stop_requested: asyncio.Event,
) -> None:
    """Keep the registry entry alive (TTL three refreshes); mark it draining once
    ``stop_requested`` is set (at once, not at the next refresh)."""
    worker_id = caps.worker_id
    while True:
        if stop_requested.is_set():
            await asyncio.sleep(every_s)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await stop_requested.wait()
        try:
            state = "draining" if stop_requested.is_set() else None
            if not await registry.refresh(caps, slots=slots, state=state):
                logger.warning(
                    "worker %s had dropped out of the registry; registered again", worker_id
                )
        except (RedisError, OSError) as exc:
            logger.warning("worker %s could not refresh its registration: %s", worker_id, exc)
        except Exception:
            logger.exception("worker %s registry refresh failed", worker_id)


async def reap_periodically(queue: Queue, worker_id: str) -> None:
    """The shared reaper (``emp_core.queue.reaper``): about twice per interval, one sweep per
    interval across every process that runs it."""
    await Reaper(queue, owner=f"worker {worker_id}").run()
