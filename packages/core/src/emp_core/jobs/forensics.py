"""Job forensics (issue 17): a job's attempts rebuilt from its event stream, pure.

An attempt opens with a ``claimed`` event and closes with the next event that takes the job from
its worker: ``retrying`` (failed, retried after a delay), ``failed`` (for good), ``completed``,
``cancelled``, or ``requeued`` (a lost lease, a graceful release, an operator's requeue). The
same events come from Redis (the job's stream, while retained) and from the SQL archive (the
stream copied with the job when it finished), so forensics read the same either way.

The stream is capped (``EMP_EVENTS_MAXLEN``): a job with very many progress reports may have lost
its oldest events; ``complete`` says whether the first event (``submitted``) is still there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from emp_core.jobs.events import EventType, JobEvent
from emp_core.jobs.job import Job

# requeued reasons that mean the worker lost the job, not that the job failed.
LOST_REASONS = frozenset({"lease_expired"})


class Attempt(BaseModel):
    """One claim of a job by a worker, and how it ended."""

    number: int  # 1-based, in claim order (a lost lease does not spend an attempt; this counts it)
    attempt: int | None = None  # the job's attempt counter at the claim
    worker_id: str | None = None
    machine_id: str | None = None
    claimed_at: datetime
    started_at: datetime | None = None  # the first progress report
    ended_at: datetime | None = None
    waited_s: float | None = None  # from when the job became pending to the claim
    run_s: float | None = None  # from the claim to the end (or None while it runs)
    progress: float | None = None  # the highest progress reported
    outcome: str = (
        "running"  # running | completed | retrying | failed | cancelled | lost | requeued
    )
    error: str | None = None
    category: str | None = None
    pattern_id: str | None = None  # known for the job's last failure only
    retry_at: datetime | None = None
    retry_delay_s: float | None = None
    reason: str | None = None  # why a requeue or cancel happened


class Forensics(BaseModel):
    """Everything known about how a job went."""

    job_id: str
    status: str
    source: str  # "redis" or "archive"
    attempts: list[Attempt]
    lost_leases: int
    retries: int  # attempts that ended in a retry
    events: list[JobEvent]
    complete: bool  # the stream still holds the job's first event


def _seconds(a: datetime, b: datetime) -> float:
    # Events of one call may read the clock twice (a due retry is requeued, then claimed): never
    # a negative span.
    return max(0.0, round((b - a).total_seconds(), 3))


def build_attempts(events: Sequence[JobEvent], job: Job | None = None) -> list[Attempt]:
    """The attempts in ``events`` (oldest first). ``job`` fills in what only the job's record
    knows: the pattern of its last failure."""
    attempts: list[Attempt] = []
    open_: Attempt | None = None
    available: datetime | None = None  # when the job last became claimable
    for e in events:
        if e.type in (EventType.SUBMITTED, EventType.REQUEUED) and open_ is None:
            available = e.at
        if e.type == EventType.CLAIMED:
            open_ = Attempt(
                number=len(attempts) + 1,
                attempt=e.attempt,
                worker_id=e.worker_id,
                machine_id=e.machine_id,
                claimed_at=e.at,
                waited_s=_seconds(available, e.at) if available else None,
            )
            attempts.append(open_)
            available = None
            continue
        if open_ is None:
            continue
        if e.type == EventType.PROGRESS:
            if open_.started_at is None:
                open_.started_at = e.at
            if e.progress is not None:
                open_.progress = max(open_.progress or 0.0, e.progress)
            continue
        ended = True
        if e.type == EventType.COMPLETED:
            open_.outcome, open_.progress = "completed", 100.0
        elif e.type == EventType.RETRYING:
            open_.outcome, open_.error, open_.category = "retrying", e.error, e.category
            open_.retry_at = e.retry_at
            if e.retry_at is not None:
                open_.retry_delay_s = _seconds(e.at, e.retry_at)
        elif e.type == EventType.FAILED:
            open_.outcome, open_.error, open_.category = "failed", e.error, e.category
        elif e.type == EventType.CANCELLED:
            open_.outcome, open_.reason = "cancelled", e.reason
        elif e.type == EventType.REQUEUED:
            open_.outcome = "lost" if e.reason in LOST_REASONS else "requeued"
            open_.reason = e.reason
            available = e.at
        else:
            ended = False
        if ended:
            open_.ended_at = e.at
            open_.run_s = _seconds(open_.claimed_at, e.at)
            open_ = None
    if job is not None and attempts:
        last = attempts[-1]
        if last.outcome in ("failed", "retrying") and job.error_pattern_id:
            last.pattern_id = job.error_pattern_id
        if last.category is None and last.outcome in ("failed", "retrying"):
            last.category = job.error_category
    return attempts


def forensics(job: Job, events: Sequence[JobEvent], *, source: str) -> Forensics:
    attempts = build_attempts(events, job)
    return Forensics(
        job_id=job.id,
        status=job.status.value,
        source=source,
        attempts=attempts,
        lost_leases=job.lost_leases,
        retries=sum(1 for a in attempts if a.outcome == "retrying"),
        events=list(events),
        complete=bool(events) and events[0].type == EventType.SUBMITTED,
    )
