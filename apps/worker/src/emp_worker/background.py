"""The worker's background loops besides its slots: keeping its registry entry alive and
running the shared reaper."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.queue.reaper import Reaper
from emp_core.registry.workers import WorkerRegistry

logger = logging.getLogger(__name__)


# How soon a failed refresh is tried again: a Redis that restarted should see the worker again
# within about this long of answering, not a whole refresh interval later.
_RETRY_SECONDS = 1.0


async def refresh_registration(
    registry: WorkerRegistry,
    caps: WorkerCapabilities,
    *,
    slots: int,
    every_s: float,
    stop_requested: asyncio.Event,
    connection_lost: asyncio.Event | None = None,
) -> None:
    """Keep the registry entry alive (TTL three refreshes); mark it draining once
    ``stop_requested`` is set (at once, not at the next refresh).

    ``connection_lost`` (set when the worker's wake-up subscription loses Redis) refreshes at
    once, and a failed refresh is tried again each ``_RETRY_SECONDS``: a Redis that restarted
    without persistence has lost the entry, and the worker registers again as soon as it
    answers, whoever (another process, this worker's reaper) reloaded the Function library."""
    worker_id = caps.worker_id
    wait_s = every_s
    failing = False
    while True:
        wake = [connection_lost] if connection_lost is not None else []
        if not stop_requested.is_set():
            wake.append(stop_requested)
        await _first_set(wake, within_s=wait_s)
        if connection_lost is not None:
            connection_lost.clear()
        try:
            state = "draining" if stop_requested.is_set() else None
            if not await registry.refresh(caps, slots=slots, state=state):
                logger.warning(
                    "worker %s had dropped out of the registry; registered again", worker_id
                )
            failing, wait_s = False, every_s
        except (RedisError, OSError) as exc:
            if not failing:  # once per outage, not once per retry
                logger.warning("worker %s could not refresh its registration: %s", worker_id, exc)
            failing, wait_s = True, min(every_s, _RETRY_SECONDS)
        except Exception:
            logger.exception("worker %s registry refresh failed", worker_id)


async def _first_set(events: list[asyncio.Event], *, within_s: float) -> None:
    """Return when one of ``events`` is set or after ``within_s`` seconds, whichever is first."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        if waiters:
            await asyncio.wait(waiters, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(within_s)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def reap_periodically(queue: Queue, worker_id: str) -> None:
    """The shared reaper (``emp_core.queue.reaper``): about twice per interval, one sweep per
    interval across every process that runs it."""
    await Reaper(queue, owner=f"worker {worker_id}").run()
