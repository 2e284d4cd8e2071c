"""Job events: the shape of one event, decoding from the stream and the pub/sub channel, and a
helper that replays a job's stream and then follows it live.

The Lua library appends every change of a job to that job's capped stream (``Keys.events``) and
publishes it on the queue's channel (``Keys.events_channel``). Reading the stream with XREAD from
the last seen id gives replay and live following with no gap between them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from emp_core.errors import NotFound
from emp_core.queue.keys import Keys
from emp_core.redis import text


class EventType(StrEnum):
    SUBMITTED = "submitted"
    CLAIMED = "claimed"
    PROGRESS = "progress"
    RETRYING = "retrying"
    REQUEUED = "requeued"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})


class JobEvent(BaseModel):
    """One change of one job."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    job_id: str
    type: EventType
    status: str
    at: datetime
    service: str | None = None
    attempt: int | None = None
    worker_id: str | None = None
    progress: float | None = None
    message: str | None = None
    error: str | None = None
    reason: str | None = None
    # A progress event's small preview image (a data:image/ URL), when the connector sent one.
    preview: str | None = None
    # Forensics (issue 17): the claiming worker's machine; a failure's category (ADR-009) and,
    # for a retry, when it is due.
    machine_id: str | None = None
    category: str | None = None
    retry_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.type.is_terminal

    @classmethod
    def from_fields(cls, event_id: str, job_id: str, fields: Mapping[str, Any]) -> JobEvent:
        """Build from a stream entry's or a published message's fields (strings or numbers)."""

        def field(name: str) -> str | None:
            value = fields.get(name)
            if value is None or value == "":
                return None
            return text(value)

        at_ms = int(float(field("at") or 0))
        attempt, progress, retry_at = field("attempt"), field("progress"), field("retry_at")
        return cls(
            event_id=event_id,
            job_id=job_id,
            type=EventType(field("type") or ""),
            status=field("status") or "",
            at=datetime.fromtimestamp(at_ms / 1000, UTC),
            service=field("service"),
            attempt=int(float(attempt)) if attempt else None,
            worker_id=field("worker_id"),
            progress=float(progress) if progress else None,
            message=field("message"),
            error=field("error"),
            reason=field("reason"),
            preview=field("preview"),
            machine_id=field("machine_id"),
            category=field("category"),
            retry_at=(
                datetime.fromtimestamp(int(float(retry_at)) / 1000, UTC) if retry_at else None
            ),
        )

    @classmethod
    def from_message(cls, data: bytes | str) -> JobEvent:
        """Decode one message from ``Keys.events_channel``."""
        body = orjson.loads(data)
        return cls.from_fields(body["event_id"], body["job_id"], body)


async def replay(redis: Redis, keys: Keys, job_id: str, after: str = "-") -> list[JobEvent]:
    """The job's stored events after ``after`` (exclusive), oldest first."""
    start = "-" if after == "-" else f"({after}"
    entries: Any = await redis.xrange(keys.events(job_id), min=start)
    return [
        JobEvent.from_fields(text(eid), job_id, {text(k): v for k, v in fields.items()})
        for eid, fields in entries
    ]


async def follow(
    redis: Redis, keys: Keys, job_id: str, *, after: str = "0-0", block_ms: int = 5000
) -> AsyncIterator[JobEvent]:
    """Replay the job's events after ``after``, then follow new ones live; ends after a terminal
    event. Raises ``NotFound`` when neither the job nor its events exist."""
    stream = keys.events(job_id)
    if not await redis.exists(stream, keys.job(job_id)):
        raise NotFound(f"job {job_id} does not exist", field="job_id")
    last = after
    while True:
        batches: Any = await redis.xread({stream: last}, block=block_ms, count=100)
        for _stream, entries in batches or []:
            for eid, fields in entries:
                last = text(eid)
                event = JobEvent.from_fields(last, job_id, {text(k): v for k, v in fields.items()})
                yield event
                if event.is_terminal:
                    return
