"""The API process's background tasks: the lease reaper, the archive projector, the fold of
error-pattern match counts into SQL, and the sweep of job outputs past their retention.

Both are safe with any number of API processes (and workers) running them: the reaper's Lua
removes each expired lease in exactly one call, and the projector projects only while it holds
the archive lease, with an idempotent upsert besides (see ``emp_sql.archive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from emp_api.state import Services
from emp_core.blobs.retention import sweep_periodically
from emp_core.errors import EmpError
from emp_core.queue.queues import Queues
from emp_core.queue.reaper import Reaper
from emp_core.telemetry import Telemetry
from emp_sql.archive import ArchiveProjector
from emp_sql.patterns_admin import PatternAdmin
from emp_web.webhooks.dispatcher import WebhookDispatcher
from emp_web.webhooks.progress import ProgressFeed

logger = logging.getLogger(__name__)


async def reap_forever(queues: Queues, interval_s: float, telemetry: Telemetry) -> None:
    """The shared reaper of each queue (``emp_core.queue.reaper``: one sweep per interval across
    every process that runs it); report the depth over every queue to telemetry every
    ``interval_s`` when exported."""
    reapers = [
        asyncio.create_task(Reaper(q, owner=f"api {os.getpid()}").run(), name="reap")
        for q in queues
    ]
    try:
        while True:
            try:
                if telemetry.exporting:
                    telemetry.jobs.set_queue_depth(await queues.depth())
            except (RedisError, OSError, EmpError) as exc:
                logger.warning("queue depth skipped a round: %s", exc)
            await asyncio.sleep(interval_s)
    finally:
        for reaper in reapers:
            reaper.cancel()


async def fold_forever(patterns: PatternAdmin, interval_s: float) -> None:
    """Fold the error-pattern match counts workers keep in Redis into SQL, every ``interval_s``."""
    while True:
        try:
            folded = await patterns.fold_counts()
            if folded:
                logger.info("folded %d error-pattern matches into the statistics", folded)
        except (RedisError, OSError, EmpError, SQLAlchemyError) as exc:
            logger.warning("error-pattern fold skipped a round: %s", exc)
        await asyncio.sleep(interval_s)


def _report_crash(task: asyncio.Task[None]) -> None:
    """A background task must run for the process's lifetime: say so loudly when one stops."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("background task %s stopped", task.get_name(), exc_info=exc)


class Background:
    """Starts and stops the background tasks of one API process."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.projectors: list[ArchiveProjector] = []
        self.dispatcher: WebhookDispatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        s, api = self.services, self.services.settings
        if api.run_reaper:
            interval = s.queue.settings.reap_interval_seconds
            self._tasks.append(
                asyncio.create_task(reap_forever(s.queues, interval, s.telemetry), name="reaper")
            )
        # One projector per queue, each with its queue's lease and outbox; each hears every
        # queue's terminal events and finds another queue's job absent (one read, dropped).
        for queue in s.queues if api.run_projector else ():
            projector = ArchiveProjector(
                queue, s.database, catch_up_seconds=api.archive_catch_up_seconds,
                lease_seconds=api.archive_lease_seconds, webhook_max_age=s.webhooks.max_age,
            )  # fmt: skip
            self.projectors.append(projector)
            s.hub.listen(projector.offer)
            self._tasks.append(asyncio.create_task(projector.run(), name="projector"))
        # Outputs past their job's retention leave the blob store: Redis workers sweep too, but
        # a fleet of gRPC workers only has the API (sweeping is idempotent).
        home = s.queue
        sweep = sweep_periodically(home.redis, home.keys, s.backends.blobs, f"api {os.getpid()}")
        self._tasks.append(asyncio.create_task(sweep, name="output-sweep"))
        if api.run_pattern_fold:
            fold = fold_forever(s.patterns, api.pattern_fold_seconds)
            self._tasks.append(asyncio.create_task(fold, name="pattern-fold"))
        if s.webhooks.run_dispatcher:
            # Deliveries of every API process share the SQL outbox; each goes out from one.
            self.dispatcher = WebhookDispatcher(s.database, s.webhooks)
            self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="webhooks"))
            for queue in s.queues:  # each finds its own queue's jobs, as the projectors do
                progress = ProgressFeed(s.redis, queue.keys, s.database)
                s.hub.listen(progress.offer)
                self._tasks.append(asyncio.create_task(progress.run(), name="webhook-progress"))
        for task in self._tasks:
            task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
