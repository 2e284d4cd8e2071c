"""Reporting how a job ended: complete (and claim the next), fail (classified), release.

A ``Reporter`` belongs to one running ``Worker``: it turns a finished ``RunningJob`` into the
one queue call that records its outcome, counts it in ``WorkerStats`` and the job metrics, and
logs it. A report that finds the job no longer this worker's claim (``StaleToken``) is dropped
and counted as taken away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from pydantic import JsonValue

from emp_core.blobs.retention import output_paths
from emp_core.errors import StaleToken
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import ClaimedJob, ClaimResult
from emp_core.telemetry import Telemetry
from emp_worker.connectors.base import Abort, Retry
from emp_worker.failures import Classifier, JobTimedOut, classify, decide, describe
from emp_worker.running import RunningJob
from emp_worker.transport.base import Failure, Transport

logger = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    """What this worker has done since it started."""

    claims: int = 0  # claim calls, with or without a job
    claimed: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    lost: int = 0  # jobs taken away (reassigned, or cancelled before they reported)


@dataclass
class Reporter:
    """Records job outcomes for one worker; ``stopping`` says whether to claim a next job."""

    transport: Transport
    caps: WorkerCapabilities
    stats: WorkerStats
    telemetry: Telemetry
    classifier: Classifier
    stopping: Callable[[], bool]

    @property
    def worker_id(self) -> str:
        return self.caps.worker_id

    async def report(self, running: RunningJob) -> ClaimResult | None:
        """Tell the queue how the job ended, unless it is no longer ours to tell; returns the
        next claim when the job completed."""
        claimed, task = running.claimed, running.task
        job_id = claimed.id
        if running.stop_reason == "cancelled":
            self.stats.cancelled += 1
            logger.info(
                "job %s was cancelled (%s); its connector stopped after %.1f s on worker %s",
                job_id, running.detail or "no reason given", running.elapsed, self.worker_id,
            )  # fmt: skip
            return None
        if running.stop_reason == "lost":
            self.stats.lost += 1
            logger.warning(
                "job %s was taken from worker %s (%s); its connector stopped after %.1f s",
                job_id, self.worker_id, running.detail, running.elapsed,
            )  # fmt: skip
            return None
        finished = not task.cancelled() and task.exception() is None
        if running.stop_reason == "shutdown" and not finished:
            await self.release(claimed, "worker shutting down")
            return None
        if running.stop_reason == "timeout" and not finished:
            await self.fail(claimed, JobTimedOut(claimed.job.timeout_s))
            return None
        if task.cancelled():
            await self.fail(claimed, asyncio.CancelledError("the connector was cancelled"))
            return None
        exc = task.exception()
        if exc is None:
            return await self.complete(running, task.result())
        if isinstance(exc, StaleToken):  # a progress report found the job gone
            self.stats.lost += 1
            logger.warning(
                "job %s was taken from worker %s while running (%s)",
                job_id, self.worker_id, exc.message,
            )  # fmt: skip
        else:
            await self.fail(claimed, exc)
        return None

    async def complete(self, running: RunningJob, result: JsonValue) -> ClaimResult | None:
        """Store the result and, unless stopping, claim this slot's next job in the same call:
        one round trip per job instead of two."""
        claimed = running.claimed
        following: ClaimResult | None = None
        # Output files leave the blob store with the job: recorded before the result is stored
        # (a crash in between leaks nothing), and due at once if the result is not kept.
        outputs = output_paths(result)
        await self.transport.keep_outputs(outputs, keep=True)
        try:
            following = await self.transport.complete(
                claimed, result, next_for_slot=None if self.stopping() else running.slot
            )
        except StaleToken as exc:
            self.stats.lost += 1
            logger.warning(
                "job %s finished on worker %s but is no longer its claim (%s); result dropped",
                claimed.id, self.worker_id, exc.message,
            )  # fmt: skip
            await self.transport.keep_outputs(outputs, keep=False)
            return None
        except orjson.JSONEncodeError as exc:
            await self.transport.keep_outputs(outputs, keep=False)
            await self.fail(claimed, TypeError(f"the connector's result is not JSON: {exc}"))
            return None
        self.stats.completed += 1
        self.telemetry.jobs.completed(claimed.job.service, duration_s=running.elapsed)
        logger.info(
            "job %s completed in %.1f s on worker %s", claimed.id, running.elapsed, self.worker_id
        )
        return following

    async def fail(self, claimed: ClaimedJob, exc: BaseException) -> None:
        message = describe(exc)
        classifier = self.classifier
        patterns = self.transport.patterns
        if classifier is classify and patterns is not None:
            # The job's service names its connector: connector-scoped patterns apply first.
            service = claimed.job.service
            classifier = lambda m: classify(m, patterns, service)  # noqa: E731
        retryable, delay_s, classified = decide(exc, classifier)
        # Undecided: no patterns here and the default classifier, and not Retry/Abort.
        decided = (
            classified is not None or classifier is not classify or isinstance(exc, Retry | Abort)
        )
        try:
            outcome = await self.transport.fail(
                claimed, Failure(message, retryable, delay_s, classified, decided)
            )
        except StaleToken as exc2:
            self.stats.lost += 1
            logger.warning(
                "job %s failed on worker %s (%s) but is no longer its claim (%s)",
                claimed.id, self.worker_id, message, exc2.message,
            )  # fmt: skip
            return
        if classified is not None and patterns is not None:
            await patterns.record(classified, message, claimed.job.service)
        self.telemetry.jobs.failed(
            claimed.job.service,
            category=classified.category if classified is not None else "unknown",
            retrying=outcome == "retrying",
        )
        job = claimed.job
        if outcome == "retrying":
            self.stats.retried += 1
            logger.info(
                "job %s failed on worker %s (attempt %d of %d): %s; it will be retried",
                job.id, self.worker_id, job.attempts, job.max_attempts, message,
            )  # fmt: skip
        else:
            self.stats.failed += 1
            logger.warning(
                "job %s failed for good on worker %s (attempt %d of %d%s): %s",
                job.id, self.worker_id, job.attempts, job.max_attempts,
                "" if retryable else ", not retryable", message,
            )  # fmt: skip
        logger.debug("job %s failure detail", job.id, exc_info=exc)

    async def release(self, claimed: ClaimedJob, reason: str) -> None:
        try:
            await self.transport.release(claimed, reason)
        except StaleToken as exc:
            self.stats.lost += 1
            logger.warning(
                "job %s could not be handed back by worker %s (%s)",
                claimed.id, self.worker_id, exc.message,
            )  # fmt: skip
            return
        self.stats.released += 1
        logger.info(
            "job %s handed back to the queue by worker %s: %s", claimed.id, self.worker_id, reason
        )
