"""The worker loop: claim a job the worker can run, drive its connector, report the outcome.

One ``Worker`` per process (per GPU). It reaches the queue through a ``Transport``
(``transport/``: Redis itself by default, or the API's gRPC ``WorkerService``), the same loop over
either. It has ``slots`` slot tasks, each running one job at a time:

- an idle slot clears its ``WakeSignal``, claims, and when nothing is there waits on the signal
  (a submit rings it within milliseconds) or the claim's ``retry_in`` hint, never a polling sleep;
- a claimed job's lease is renewed from a thread of the transport; the connector runs in a task of
  its own, under the job's timeout, and is cancelled when the job is cancelled (control channel),
  its lease is lost (fencing), or the worker shuts down past its grace period;
- besides the slots, the transport's loops run (over Redis: the registry entry, the idempotent
  reaper, ``background.py``); how a job ended is reported by a ``Reporter`` (``reporting.py``).

``stop()`` (SIGTERM) stops claiming and lets running jobs finish within ``grace_seconds``; jobs
still running then are cancelled and released back to pending, not failed. ``burst`` workers
return once there is nothing left they can claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from emp_core.errors import EmpError
from emp_core.loras.cache import LoraCache
from emp_core.patterns import PatternCache
from emp_core.queue.queue import ClaimedJob, ClaimResult
from emp_core.queue.wake import WakeSignal
from emp_core.redis.tasks import cancel_until_done
from emp_core.telemetry import Telemetry, job_span, setup_telemetry
from emp_worker.config import WorkerSettings
from emp_worker.connectors import Connector, build_connectors
from emp_worker.failures import Classifier, classify
from emp_worker.loras import run_with_loras
from emp_worker.reporting import Reporter, WorkerStats
from emp_worker.running import QueueJobContext, RunningJob
from emp_worker.transport import Transport, open_transport

logger = logging.getLogger(__name__)

# After a Redis error in a slot, wait this long before claiming again (seconds).
_ERROR_BACKOFF = 1.0
# Never wait less than this for a retry that is due "now" (seconds): no busy loop.
_MIN_WAIT = 0.005
# How long cancelled connectors get to unwind at shutdown before their jobs are released anyway.
_UNWIND_SECONDS = 5.0
# Cancel messages for jobs this worker has not started yet (a claim reply still in flight).
_EARLY_CANCELS = 1000


class Worker:
    """One worker process's loop; ``await worker.run()`` until ``stop()`` (or drained, in burst)."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        connectors: Mapping[str, Connector] | None = None,
        classifier: Classifier = classify,
        redis: Redis | None = None,
        telemetry: Telemetry | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        self.caps = settings.to_capabilities()
        self.id = self.caps.worker_id
        # ADR-003: heartbeat, job metrics and spans; exported only when OTEL_* configures it.
        self.telemetry = telemetry or setup_telemetry(
            "emp-worker", instance_id=self.id, machine_id=self.caps.machine_id, install=False
        )
        self.connectors = dict(connectors) if connectors is not None else build_connectors(settings)
        missing = [s for s in self.caps.services if s not in self.connectors]
        if missing:
            raise EmpError(f"worker {self.id} has no connector for {', '.join(missing)}")
        self.classifier = classifier
        self.stats = WorkerStats()
        self.ready = asyncio.Event()  # set once registered and subscribed: claims are live
        self._redis = redis
        self._transport = transport
        self._running: dict[str, RunningJob] = {}
        self._early_cancels: OrderedDict[str, str] = OrderedDict()
        self._stop_requested = asyncio.Event()
        self._force = asyncio.Event()
        self._reporter: Reporter | None = None
        self.loras = LoraCache(
            settings.lora_cache_path,
            budget_bytes=int(settings.lora_cache_gb * 10**9),
            ttl_s=settings.lora_cache_ttl_seconds,
        )

    # --- control ---------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("the worker is not running")
        return self._transport

    @property
    def patterns(self) -> PatternCache | None:
        """The error patterns the worker holds (None before ``run`` or over gRPC)."""
        return self._transport.patterns if self._transport is not None else None

    @property
    def lease_renewals(self) -> int:
        """Lease renewals the lease thread has made (0 before ``run``)."""
        return self._transport.lease_renewals if self._transport is not None else 0

    @property
    def reporter(self) -> Reporter:
        if self._reporter is None:
            raise RuntimeError("the worker is not running")
        return self._reporter

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming; running jobs get ``grace_seconds`` to finish (none when ``force``)."""
        if not self.stopping:
            busy = len(self._running)
            logger.info(
                "worker %s stops claiming; %d running job%s get%s %g s to finish",
                self.id, busy, "" if busy == 1 else "s", "s" if busy == 1 else "",
                0 if force else self.settings.grace_seconds,
            )  # fmt: skip
        elif force and not self._force.is_set():
            logger.info("worker %s stops now: running jobs go back to the queue", self.id)
        self._stop_requested.set()
        if force:
            self._force.set()
        if self._transport is not None:
            self._transport.wake_all()

    # --- the loop --------------------------------------------------------------------------------
    async def run(self) -> WorkerStats:
        """Connect, register, run the slots until stopped (or drained), then clean up."""
        s = self.settings
        transport = self._transport
        if transport is None:
            transport = self._transport = open_transport(
                s, redis=self._redis, stopping=self._stop_requested
            )
        self._reporter = Reporter(
            transport, self.caps, self.stats, self.telemetry, self.classifier,
            stopping=lambda: self.stopping,
        )  # fmt: skip
        background: list[asyncio.Task[None]] = []
        try:
            await transport.open(self._on_control, self._on_lease_lost)
            await self.loras.open()
            for connector in self.connectors.values():
                start = getattr(connector, "start", None)
                if start is not None:  # an optional hook: load a model before the first claim
                    await start()
            await transport.go_live(s.slots)
            stores = {id(c.store): c.store for c in self.connectors.values() if hasattr(c, "store")}
            background = [
                asyncio.create_task(loop, name=f"{self.id}-background")
                for loop in transport.background(self.loras, stores.values())
            ]
            slots = [
                asyncio.create_task(self._slot(i), name=f"{self.id}-slot{i}")
                for i in range(s.slots)
            ]
            logger.info(
                "worker %s started on %s, queue %s: services %s, %d slot%s%s",
                self.id, transport.where, s.queue, ", ".join(self.caps.services), s.slots,
                "" if s.slots == 1 else "s", ", burst" if s.burst else "",
            )  # fmt: skip
            self.ready.set()
            await self._supervise(slots)
        finally:
            await cancel_until_done(background, within=_UNWIND_SECONDS)
            await transport.close(s.slots)
            await self.loras.close()
            if self.ready.is_set():
                self._log_totals()
        return self.stats

    def _log_totals(self) -> None:
        st = self.stats
        logger.info(
            "worker %s stopped: %d completed, %d retried, %d failed, %d cancelled, "
            "%d released, %d taken away",
            self.id, st.completed, st.retried, st.failed, st.cancelled, st.released, st.lost,
        )  # fmt: skip

    async def _supervise(self, slots: list[asyncio.Task[None]]) -> None:
        """Wait for the slots; on ``stop()`` give running jobs the grace period, then cancel."""
        stop_waiter = asyncio.create_task(self._stop_requested.wait())
        force_waiter = asyncio.create_task(self._force.wait())
        try:
            await asyncio.wait([*slots, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.grace_seconds
            pending = {t for t in slots if not t.done()}
            while pending and not self._force.is_set() and (left := deadline - loop.time()) > 0:
                await asyncio.wait(
                    [*pending, force_waiter], timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                pending = {t for t in slots if not t.done()}
            if pending:
                for running in list(self._running.values()):
                    running.stop("shutdown", "worker shutting down")
                _, pending = await asyncio.wait(pending, timeout=_UNWIND_SECONDS)
            for task in pending:  # a connector that ignores cancellation: stop waiting for it
                logger.error("worker %s gave up waiting for %s to stop", self.id, task.get_name())
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
        finally:
            stop_waiter.cancel()
            force_waiter.cancel()

    async def _slot(self, index: int) -> None:
        """Claim and run jobs one at a time until stopped (or, in burst, until none is left)."""
        transport = self.transport
        signal = transport.signal(index)
        try:
            while not self.stopping:
                try:
                    if not await self._claim_and_run(signal, index):
                        return  # burst: drained
                except (RedisError, OSError) as exc:
                    logger.warning(
                        "worker %s slot %d lost %s (%s); trying again in %g s",
                        self.id, index, transport.where, exc, _ERROR_BACKOFF,
                    )  # fmt: skip
                    await transport.recover(exc)
                    await signal.wait(_ERROR_BACKOFF)
                except Exception:
                    logger.exception("worker %s slot %d failed; carrying on", self.id, index)
                    await signal.wait(_ERROR_BACKOFF)
        finally:
            transport.discard(signal)

    async def _claim_and_run(self, signal: WakeSignal, slot: int) -> bool:
        """One turn of a slot. False when a burst worker has nothing left to do."""
        woken_by = signal.queue  # the queue whose job rang this slot, if one did
        signal.clear()  # before the claim: a wake-up from now on is not lost
        sent_ns = time.time_ns()
        # An empty claim enters this slot as idle: the next job it can run wakes it alone.
        result = await self.transport.claim(slot, woken_by)
        self.stats.claims += 1
        while result.claimed is not None:
            # Completing a job claims the next in the same call (see Reporter.complete): a wake-up
            # from here on is for a claim that has not happened yet, so it is kept.
            signal.clear()
            following = await self._run_job(result.claimed, sent_ns, slot)
            if following is None:
                return True
            self.stats.claims += 1
            result, sent_ns = following, time.time_ns()
        if self.settings.burst and result.retry_in is None:
            return False
        logger.debug(
            "worker %s found nothing to claim; next claim on a wake-up or in %s s",
            self.id, result.retry_in,
        )  # fmt: skip
        wait = self.settings.idle_wait_seconds
        if result.retry_in is not None:
            wait = min(wait, max(result.retry_in, _MIN_WAIT))
        await signal.wait(wait)
        return True

    # --- one job ---------------------------------------------------------------------------------
    async def _run_job(
        self, claimed: ClaimedJob, claim_sent_ns: int | None = None, slot: int | None = None
    ) -> ClaimResult | None:
        """Run one claimed job in the submitter's trace (``job.claim`` then ``job.run`` spans);
        returns the next claim when completing it claimed one."""
        job = claimed.job
        tracer = self.telemetry.tracer()
        tp = job.traceparent
        with job_span(
            tracer, "job.claim", traceparent=tp, job_id=job.id, service=job.service,
            start_time_ns=claim_sent_ns,
        ):  # fmt: skip
            wait = (job.claimed_at - job.created_at).total_seconds() if job.claimed_at else None
            self.telemetry.jobs.claimed(job.service, queue_wait_s=wait)
        with job_span(tracer, "job.run", traceparent=tp, job_id=job.id, service=job.service):
            return await self._run_claimed(claimed, slot)

    async def _run_claimed(
        self, claimed: ClaimedJob, slot: int | None = None
    ) -> ClaimResult | None:
        job = claimed.job
        self.stats.claimed += 1
        if self.stopping:  # the claim raced with stop(): hand it straight back
            await self.reporter.release(claimed, "worker shutting down")
            return None
        transport = self.transport
        transport.hold(claimed)
        # DEBUG: the outcome's line (reporting.py) names the job, its time and the worker; a
        # second INFO line per job was a tenth of a worker's CPU when jobs take milliseconds.
        logger.debug(
            "worker %s claimed job %s (%s, attempt %d of %d)",
            self.id, job.id, job.service, job.attempts, job.max_attempts,
        )  # fmt: skip
        ctx = QueueJobContext(transport, claimed, self.id)
        task = asyncio.create_task(
            run_with_loras(self.connectors[job.service], job, ctx, self.loras), name=f"job-{job.id}"
        )
        running = self._running[job.id] = RunningJob(claimed, task, slot=slot)
        timer = asyncio.get_running_loop().call_later(
            job.timeout_s, running.stop, "timeout", f"timed out after {job.timeout_s:g} s"
        )
        if (reason := self._early_cancels.pop(job.id, None)) is not None:
            running.stop("cancelled", reason)
        try:
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                # The slot itself is torn down: its connector ignored cancellation at shutdown.
                running.stop("shutdown", "worker shutting down")
                with contextlib.suppress(EmpError, RedisError, OSError):  # OSError: TransportError
                    await self.reporter.release(claimed, "worker shutting down")
                raise
            return await self.reporter.report(running)
        finally:
            timer.cancel()
            self._running.pop(job.id, None)
            transport.drop(job.id, claimed.token)

    # --- messages from the transport and its lease thread ----------------------------------------
    def _on_control(self, message: dict[str, Any]) -> None:
        if message.get("type") != "cancel":
            logger.debug("worker %s ignored control message %r", self.id, message)
            return
        job_id = str(message.get("job_id", ""))
        reason = str(message.get("reason") or "cancelled")
        running = self._running.get(job_id)
        if running is None:
            # The claim's reply may still be on its way to a slot: remember for a while.
            self._early_cancels[job_id] = reason
            while len(self._early_cancels) > _EARLY_CANCELS:
                self._early_cancels.popitem(last=False)
            return
        logger.info(
            "job %s cancelled (%s); stopping its connector on worker %s", job_id, reason, self.id
        )
        running.stop("cancelled", reason)

    def _on_lease_lost(self, job_id: str, token: str, why: str) -> None:
        running = self._running.get(job_id)
        if running is None or running.claimed.token != token:
            return  # already finished
        logger.warning(
            "worker %s lost the lease of job %s: %s; stopping its connector", self.id, job_id, why
        )
        running.stop("lost", why)
