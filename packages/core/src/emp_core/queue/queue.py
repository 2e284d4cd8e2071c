"""The queue's service layer: submit, claim, report and cancel jobs over ``functions.py``.

Apps (API, worker, CLI) call this; it validates input, makes the pure decisions (retry delay,
requirement class) and leaves the atomic state changes to the Lua library.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, overload

import orjson
from redis.asyncio import Redis

from emp_core.errors import InvalidInput, NotFound
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import Job, JobSpec, new_job_id, retry_delay
from emp_core.jobs.loras import encode_loras
from emp_core.patterns.rules import Classification
from emp_core.queue.functions import Affinity, Functions, NextClaim, SubmitArgs
from emp_core.queue.idempotency import IdempotencyRecord
from emp_core.redis import text, text_map
from emp_core.settings import QueueSettings

_PROMOTE_LIMIT = 100


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker holds: the fencing token must accompany every report on it."""

    job: Job
    token: str
    lease_deadline_ms: int
    queue: str = ""  # the queue it came from: its reports go there (a worker may serve several)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempts


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """A claim's answer: the job, or nothing and when trying again is worth it (seconds)."""

    claimed: ClaimedJob | None
    retry_in: float | None = None


def _claim_result(reply: list[Any], queue: str) -> ClaimResult:
    """``emp_claim``'s reply: ``['job', HGETALL]`` or ``['none', ms to wait or -1]``."""
    kind, body = reply
    if kind in (b"none", "none"):
        wait_ms = int(body)
        return ClaimResult(None, None if wait_ms < 0 else wait_ms / 1000)
    fields = _decode_hash(body)
    return ClaimResult(
        ClaimedJob(Job.from_redis(fields), fields["token"], int(fields["lease_deadline"]), queue)
    )


def _decode_hash(flat: list[Any]) -> dict[str, str]:
    """A flat ``[field, value, …]`` reply (a hash the Lua read with HGETALL) as str to str."""
    it = iter(flat)
    # A Lua HGETALL answers bytes only: decoded directly, the worker's per-job hot path (text()
    # would test each of the ~50 items' type).
    return {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}


@contextlib.contextmanager
def numbered(index: int, many: bool) -> Iterator[None]:
    """An ``InvalidInput`` raised inside names the job of a batch it is about (``job 3: …``)."""
    try:
        yield
    except InvalidInput as exc:
        if many:
            exc.message = f"job {index}: {exc.message}"
            exc.args = (exc.message,)
        raise


def _classification_args(c: Classification | None) -> tuple[str, str, str]:
    if c is None:
        return ("", "", "")
    return (c.category.value, c.pattern_id or "", c.user_message)


class Queue:
    """One queue on one Redis. Cheap to build; share one per process."""

    def __init__(self, redis: Redis, settings: QueueSettings | None = None) -> None:
        self.settings = s = settings or QueueSettings()
        self.redis = redis
        self.keys = self.settings.keys
        self.functions = Functions(redis, self.keys)
        self.functions.wait_replicas = (s.redis_wait_replicas, s.redis_wait_timeout_ms)

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_seconds * 1000)

    @property
    def _affinity(self) -> Affinity:
        s = self.settings
        return Affinity(
            s.affinity_scan,
            int(s.affinity_patience_seconds * 1000),
            int(s.affinity_grace_seconds * 1000),
            int(s.affinity_window_seconds * 1000),
        )

    # --- submitting ------------------------------------------------------------------------------
    def prepare(self, data: JobSpec | Mapping[str, Any], *, traceparent: str = "") -> SubmitArgs:
        """Validate one job and turn it into the submit function's arguments."""
        spec = JobSpec.parse(data)
        payload = spec.encoded_payload(self.settings.max_payload_bytes)  # the one encoding
        cid, canonical = spec.requirement_class
        return SubmitArgs(
            id=new_job_id(),
            service=spec.service,
            priority=spec.priority,
            payload=payload,
            requirements=canonical,
            class_id=cid,
            customer_id=spec.customer_id or "",
            workflow_id=spec.workflow_id or "",
            step="" if spec.step is None else str(spec.step),
            total_steps="" if spec.total_steps is None else str(spec.total_steps),
            max_attempts=spec.max_attempts,
            timeout_s=spec.timeout_s,
            traceparent=traceparent,
            loras=encode_loras(spec.loras),
        )

    async def submit_prepared(self, args: SubmitArgs) -> Job:
        """Enqueue one job made by ``prepare`` and return it as stored (the API answers with it)."""
        s = self.settings
        fields = await self.functions.submit_and_read(args, s.events_maxlen, s.retention_seconds)
        if fields is None:
            await self.functions.submit([args], s.events_maxlen, s.retention_seconds)
            return await self.get(args.id)
        return Job.from_redis(text_map(fields))

    async def submit_once(self, args: SubmitArgs, record: IdempotencyRecord) -> tuple[str, bool]:
        """Enqueue a job made by ``prepare`` unless ``record``'s key was used before: then answer
        with that earlier job's id (``replayed`` True), or refuse a different body with
        ``IdempotencyKeyReused``. One atomic call, one round trip."""
        s = self.settings
        return await self.functions.submit_once(args, record, s.events_maxlen, s.retention_seconds)

    async def submit(self, data: JobSpec | Mapping[str, Any], *, traceparent: str = "") -> str:
        """Validate and enqueue one job; returns its id. Invalid input raises ``InvalidInput``
        naming the field, and nothing is written."""
        (job_id,) = await self.submit_many([data], traceparent=traceparent)
        return job_id

    async def submit_many(
        self, items: Iterable[JobSpec | Mapping[str, Any]], *, traceparent: str = ""
    ) -> list[str]:
        """Validate every job first, then enqueue them all in one atomic call."""
        prepared = []
        for index, item in enumerate(items):
            with numbered(index, isinstance(items, list | tuple) and len(items) > 1):
                prepared.append(self.prepare(item, traceparent=traceparent))
        if not prepared:
            return []
        s = self.settings
        return await self.functions.submit(prepared, s.events_maxlen, s.retention_seconds)

    # --- reading ---------------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job:
        fields = await self.redis.hgetall(self.keys.job(job_id))
        if not fields:
            raise NotFound(f"job {job_id} does not exist", field="job_id")
        return Job.from_redis(text_map(fields))

    async def depth(self) -> dict[str, int]:
        """Pending jobs per service."""
        raw = await self.redis.hgetall(self.keys.pending_count())
        out = {}
        for k, v in raw.items():
            if int(v) > 0:
                out[text(k)] = int(v)
        return out

    # --- working ---------------------------------------------------------------------------------
    async def claim(self, caps: WorkerCapabilities, *, slot: int | None = None) -> ClaimResult:
        """Claim the best pending job this worker can run, atomically, or learn when to retry.
        A worker's ``slot`` that finds nothing is entered as idle, and the next job it can run
        wakes it (one slot per job; see ``emp_core.queue.wake``)."""
        s = self.settings
        reply = await self.functions.claim(
            caps.worker_id, caps.services, caps.wire, self._lease_ms, s.events_maxlen,
            _PROMOTE_LIMIT, slot, self._affinity, s.fair_scan,
        )  # fmt: skip
        return _claim_result(reply, self.keys.queue)

    async def rest(self, caps: WorkerCapabilities, slots: int, *, slot: int | None = None) -> None:
        """A stopping worker's slots leave the idle sets, so no job waits on a wake-up sent to
        a slot that will not claim; with ``slot``, that slot alone (busy in another queue)."""
        await self.functions.rest(caps.worker_id, caps.wire, slots, slot)

    async def heartbeat(self, claimed: ClaimedJob) -> int:
        """Renew the lease; returns the new deadline (ms). ``StaleToken`` once the job is gone."""
        return await self.functions.heartbeat(claimed.id, claimed.token, self._lease_ms)

    async def progress(
        self, claimed: ClaimedJob, progress: float, message: str = "", *, preview: str | None = None
    ) -> None:
        """Report progress; ``preview`` is a small ``data:image/...`` URL (at most 32 KiB) that
        the progress event carries (not the job): what a studio shows while the job runs."""
        if not math.isfinite(progress) or not 0 <= progress <= 100:
            raise InvalidInput(f"progress must be 0-100, got {progress}", field="progress")
        if preview is not None and (len(preview) > 32768 or not preview.startswith("data:image/")):
            raise InvalidInput(
                "preview must be a data:image/ URL of at most 32768 bytes", field="preview"
            )
        await self.functions.progress(
            claimed.id, claimed.token, round(progress, 2), message, self.settings.events_maxlen,
            preview,
        )  # fmt: skip

    @overload
    async def complete(
        self,
        claimed: ClaimedJob,
        result: Any = None,
        *,
        then_claim: None = None,
        slot: int | None = None,
    ) -> None: ...

    @overload
    async def complete(
        self,
        claimed: ClaimedJob,
        result: Any = None,
        *,
        then_claim: WorkerCapabilities,
        slot: int | None = None,
    ) -> ClaimResult: ...

    async def complete(
        self,
        claimed: ClaimedJob,
        result: Any = None,
        *,
        then_claim: WorkerCapabilities | None = None,
        slot: int | None = None,
    ) -> ClaimResult | None:
        """Store the result. With ``then_claim``, claim that worker's next job in the same atomic
        call (one round trip per job instead of two) and return it as ``claim`` would."""
        s = self.settings
        claim_next = None
        if then_claim is not None:
            claim_next = NextClaim(
                then_claim.services, then_claim.wire, self._lease_ms, _PROMOTE_LIMIT, slot,
                self._affinity, s.fair_scan,
            )  # fmt: skip
        reply = await self.functions.complete(
            claimed.job.worker_id or "", claimed.id, claimed.token, orjson.dumps(result),
            s.retention_seconds, s.events_maxlen, claim_next,
        )  # fmt: skip
        return None if reply is None else _claim_result(reply, self.keys.queue)

    async def fail(
        self,
        claimed: ClaimedJob,
        error: str,
        *,
        retryable: bool = True,
        delay_s: float | None = None,
        classification: Classification | None = None,
    ) -> str:
        """Report a failure: retried after a backoff while attempts remain, otherwise failed for
        good and kept in the dead-letter set. Returns ``"retrying"`` or ``"failed"``.

        ``classification`` (from the error patterns) is stored with the attempt: its category,
        pattern id and the message its user is shown."""
        s = self.settings
        if delay_s is None:
            delay_s = retry_delay(
                claimed.attempt,
                base=s.retry_base_seconds,
                cap=s.retry_cap_seconds,
                jitter=s.retry_jitter,
            )
        return await self.functions.fail(
            claimed.job.worker_id or "", claimed.id, claimed.token, error[:8000], retryable,
            int(delay_s * 1000), int(s.retry_avoid_grace_seconds * 1000), s.retention_seconds,
            s.events_maxlen, _classification_args(classification),
        )  # fmt: skip

    async def release(self, claimed: ClaimedJob, reason: str = "released") -> None:
        """Hand a job back to pending without counting the attempt (graceful shutdown)."""
        await self.functions.release(
            claimed.job.worker_id or "", claimed.id, claimed.token, reason,
            self.settings.events_maxlen,
        )  # fmt: skip

    async def cancel(self, job_id: str, reason: str = "cancelled by request") -> str:
        """Cancel a job that has not finished; returns the status it had."""
        s = self.settings
        return await self.functions.cancel(job_id, reason, s.retention_seconds, s.events_maxlen)

    async def reap(self, limit: int = 1000) -> tuple[int, int, int]:
        """Requeue jobs whose lease expired, promote due retries: (requeued, failed, promoted).
        Always sweeps; processes that reap on a timer use ``emp_core.queue.reaper.Reaper``,
        which sweeps once per interval however many processes run it."""
        s = self.settings
        requeued, failed, promoted, _ = await self.functions.reap(
            limit, s.retention_seconds, s.events_maxlen, s.max_lost_leases
        )
        return requeued, failed, promoted
