"""A job's history as the job page tells it: the events that changed something a person cares
about, in order, and the failed attempts with their errors.

Progress events are left out (the progress bar shows them). A job whose event stream has gone
(an archived job) gets its history rebuilt from the timestamps of its record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from emp_core.jobs.events import EventType, JobEvent
from emp_core.jobs.job import Job

_TONES = {
    EventType.COMPLETED: "ok",
    EventType.FAILED: "bad",
    EventType.RETRYING: "warn",
    EventType.REQUEUED: "warn",
    EventType.CANCELLED: "muted",
}

# Why a job went back to pending, in words (the Lua library's reason codes).
_REASONS = {
    "retry_due": "Its wait before the next attempt was over.",
    "lease_expired": "Its worker stopped renewing the lease and is presumed gone.",
    "released": "Its worker handed it back.",
}


def _reason(code: str | None) -> str | None:
    """A reason in words: a known code explained, any other text with a capital letter."""
    if not code:
        return None
    return _REASONS.get(code) or code[:1].upper() + code[1:]


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    kind: str
    title: str
    detail: str | None = None
    tone: str = "info"


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    attempt: int
    error: str
    at: datetime
    retried: bool


def _title(event: JobEvent) -> str:
    attempt = f" (attempt {event.attempt})" if event.attempt else ""
    match event.type:
        case EventType.SUBMITTED:
            return "Submitted"
        case EventType.CLAIMED:
            worker = f" by {event.worker_id}" if event.worker_id else ""
            return f"Started{worker}{attempt}"
        case EventType.RETRYING:
            return f"Failed{attempt}, will retry"
        case EventType.REQUEUED:
            return "Returned to the queue"
        case EventType.COMPLETED:
            return "Completed"
        case EventType.FAILED:
            return f"Failed{attempt}"
        case EventType.CANCELLED:
            return "Cancelled"
    return event.type.value.capitalize()


def entries(events: Iterable[JobEvent]) -> list[Entry]:
    """The timeline of a job from its events, oldest first."""
    return [
        Entry(
            at=event.at,
            kind=event.type.value,
            title=_title(event),
            detail=event.error or _reason(event.reason),
            tone=_TONES.get(event.type, "info"),
        )
        for event in events
        if event.type != EventType.PROGRESS
    ]


def from_record(job: Job) -> list[Entry]:
    """A timeline rebuilt from the job's own timestamps, for a job with no events left."""
    out = [Entry(job.created_at, "submitted", "Submitted")]
    if job.claimed_at is not None:
        worker = f" by {job.worker_id}" if job.worker_id else ""
        out.append(Entry(job.claimed_at, "claimed", f"Started{worker}"))
    if job.finished_at is not None and job.is_terminal:
        kind = EventType(job.status.value)
        out.append(Entry(job.finished_at, kind.value, kind.value.capitalize(), job.error,
                         _TONES.get(kind, "info")))  # fmt: skip
    return out


def failed_attempts(events: Iterable[JobEvent]) -> list[FailedAttempt]:
    """Every attempt that failed, with its error, oldest first."""
    return [
        FailedAttempt(
            attempt=event.attempt or 0,
            error=event.error or "no error message",
            at=event.at,
            retried=event.type == EventType.RETRYING,
        )
        for event in events
        if event.type in (EventType.RETRYING, EventType.FAILED)
    ]
