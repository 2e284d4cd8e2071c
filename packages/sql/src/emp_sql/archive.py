"""The archive projector: copies finished jobs from Redis into the SQL archive.

Redis forgets a job ``EMP_RETENTION_SECONDS`` after it ends; the archive keeps it. Projecting is an
upsert keyed by job id, so projecting a job twice, or from two processes at once, is harmless.

Where finished jobs are found, without a SCAN: the outbox ``Keys.finished()``, to which the Lua
library adds every job in the same call that finishes it (completed, failed for good, cancelled),
whoever submitted it. The projector drains it from the head and removes what it has written, so a
job finished while no projector ran is found later. Terminal events from the queue's events
channel (fed to ``offer`` from the one subscription the process holds) only make it drain at once
instead of at the next ``catch_up_seconds``.

Only one process projects at a time: the holder of a lease in ``Keys.archive_leader()``. The
others stand by and take over within ``lease_seconds`` when it dies; the catch-up that opens each
term covers what was missed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from emp_core.jobs.events import JobEvent
from emp_core.jobs.job import TERMINAL, Job
from emp_core.queue.position import RUNTIME_SAMPLES
from emp_core.queue.queue import Queue
from emp_core.redis import text, text_map
from emp_core.redis.leader import LeaderLease
from emp_sql.job_archive import JobArchiveRepository, archive_row
from emp_sql.session import Database
from emp_sql.webhook_outbox import WebhookOutbox

logger = logging.getLogger(__name__)

_BATCH = 200


def _events(stream: Any) -> list[dict[str, Any]]:
    """A job's stream entries as the archive keeps them (forensics): id and fields, no previews."""
    return [
        {"event_id": text(eid)}
        | {text(k): text(v) for k, v in fields.items() if text(k) != "preview"}
        for eid, fields in stream
    ]


def _record_runtimes(pipe: Any, keys: Any, jobs: Sequence[Job]) -> None:
    """The run times of completed jobs, newest first, the latest ``RUNTIME_SAMPLES`` per
    service: what a pending job's ETA is estimated from (``emp_core.queue.position``)."""
    for job in jobs:
        if job.status.value == "completed" and job.claimed_at and job.finished_at:
            ms = int((job.finished_at - job.claimed_at).total_seconds() * 1000)
            pipe.lpush(keys.runtimes(job.service), max(0, ms))
            pipe.ltrim(keys.runtimes(job.service), 0, RUNTIME_SAMPLES - 1)


class ArchiveProjector:
    """Projects finished jobs of one queue into the SQL archive."""

    def __init__(
        self,
        queue: Queue,
        database: Database,
        *,
        catch_up_seconds: float = 30.0,
        lease_seconds: float = 15.0,
        holder: str | None = None,
        webhooks: bool = True,
        webhook_max_age: timedelta = timedelta(hours=24),
    ) -> None:
        self.queue = queue
        self.redis = queue.redis
        self.keys = queue.keys
        self.database = database
        self.catch_up_seconds = catch_up_seconds
        self.lease = LeaderLease(
            self.redis, self.keys.archive_leader(), ttl_s=lease_seconds, holder=holder
        )
        self.leading = False
        # Webhook deliveries of finished jobs go into the outbox in the archive's transaction:
        # a job archived is a job whose webhooks are queued, and re-projecting adds none twice.
        self.webhooks = webhooks
        self.webhook_max_age = webhook_max_age
        self._pending: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)

    # --- live ------------------------------------------------------------------------------------
    def offer(self, event: JobEvent) -> None:
        """Note a job event; a terminal one queues its job for projection. Never blocks: when the
        queue is full the job is left to the catch-up."""
        if self.leading and event.is_terminal:
            with contextlib.suppress(asyncio.QueueFull):
                self._pending.put_nowait(event.job_id)

    # --- projecting ------------------------------------------------------------------------------
    async def project(self, job_ids: Sequence[str]) -> int:
        """Archive those of ``job_ids`` that have finished; returns how many were written. Ids
        whose job is gone from Redis are dropped from the outbox too."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
                pipe.xrange(self.keys.events(job_id))
            answers = await pipe.execute()
        hashes, streams = answers[::2], answers[1::2]
        rows: list[dict[str, Any]] = []
        jobs: list[Job] = []
        settled: list[str] = []
        for job_id, raw, stream in zip(ids, hashes, streams, strict=True):
            fields = text_map(raw)
            if not fields:
                settled.append(job_id)
                continue
            if fields.get("status") not in TERMINAL:
                continue
            try:
                job = Job.from_redis(fields)
            except (KeyError, ValueError):
                logger.exception("job %s cannot be read back and is not archived", job_id)
                settled.append(job_id)
                continue
            seq = int(fields["seq"]) if fields.get("seq") else None
            rows.append(
                archive_row(job, seq=seq, queue=self.queue.settings.queue, events=_events(stream))
            )
            jobs.append(job)
            settled.append(job_id)
        if rows:
            async with self.database.session() as session:
                await JobArchiveRepository(session).upsert(rows)
                if self.webhooks:
                    outbox = WebhookOutbox(session, max_age=self.webhook_max_age)
                    await outbox.enqueue_finished(jobs)
        # Only after the rows are committed: a crash in between leaves the ids to project again.
        if settled:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.keys.finished(), *settled)
                _record_runtimes(pipe, self.keys, jobs)
                await pipe.execute()
        return len(rows)

    async def catch_up(self) -> int:
        """Archive the oldest batch of the outbox; returns how many jobs were written. What is
        written leaves the outbox, so each call starts at its head."""
        ids: Any = await self.redis.zrange(self.keys.finished(), 0, _BATCH - 1)
        return await self.project([text(i) for i in ids])

    # --- running ---------------------------------------------------------------------------------
    async def run(self, *, poll_seconds: float = 1.0) -> None:
        """Project for as long as this process holds the lease; stand by otherwise. Runs until
        cancelled."""
        next_catch_up = 0.0
        renew_every = max(0.1, self.lease.ttl_ms / 3000)
        next_renew = 0.0
        try:
            while True:
                now = time.monotonic()
                try:
                    if now >= next_renew:
                        was_leading = self.leading
                        self.leading = await self.lease.acquire_or_renew()
                        next_renew = now + renew_every
                        if self.leading and not was_leading:
                            logger.info("archive projector %s took the lead", self.lease.holder)
                            next_catch_up = now
                    if not self.leading:
                        await asyncio.sleep(min(renew_every, poll_seconds))
                        continue
                    if now >= next_catch_up:
                        await self.catch_up()
                        next_catch_up = now + self.catch_up_seconds
                    await self._drain(wait_s=min(renew_every, poll_seconds))
                except (RedisError, SQLAlchemyError, OSError) as exc:
                    logger.warning("archive projector paused after an error: %s", exc)
                    await asyncio.sleep(poll_seconds)
        finally:
            self.leading = False
            with contextlib.suppress(RedisError, OSError):
                await self.lease.release()

    async def _drain(self, *, wait_s: float) -> None:
        try:
            first = await asyncio.wait_for(self._pending.get(), wait_s)
        except TimeoutError:
            return
        batch = [first]
        while len(batch) < _BATCH and not self._pending.empty():
            batch.append(self._pending.get_nowait())
        try:
            await self.project(batch)
        except BaseException:
            # Put the batch back (what fits) so an outage does not lose it before the catch-up.
            for job_id in batch:
                with contextlib.suppress(asyncio.QueueFull):
                    self._pending.put_nowait(job_id)
            raise
