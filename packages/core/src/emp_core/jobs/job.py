"""A job: what a submitter sends (``JobSpec``), what the queue holds (``Job``), and the pure
decisions about it (pending score, retry delay, terminal states)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from emp_core.errors import InvalidInput, PayloadTooLarge, invalid_from_validation
from emp_core.jobs import jsonvalue
from emp_core.jobs.capabilities import Identifier, Service
from emp_core.jobs.loras import LoraList, LoraRef, decode_loras, unique_loras
from emp_core.jobs.payloads import validate_payload
from emp_core.jobs.requirements import Requirements, class_id

PRIORITY_MIN = 0
PRIORITY_MAX = 1000
DEFAULT_PRIORITY = 50
# The pending score is one integer that a double holds exactly: (PRIORITY_MAX - priority) in the
# high bits, submit order in the low 42 (4.4e12 jobs per queue, ~700 years at 200 jobs/s).
_SEQ_BITS = 42


class JobStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.CLAIMED, JobStatus.RUNNING})
CANCELLABLE = frozenset({JobStatus.PENDING, JobStatus.RETRYING, *ACTIVE})


class JobSpec(BaseModel):
    """A job as submitted. Unknown fields are refused, so a typo never goes unnoticed."""

    # Its schema is built on first use, not at import: a worker never submits, and building it
    # was a twentieth of a worker's start-up.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    service: Service
    priority: Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX, strict=True)] = (
        DEFAULT_PRIORITY
    )
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    requirements: Requirements = Field(default_factory=Requirements)
    customer_id: Identifier | None = None
    workflow_id: Identifier | None = None
    step: Annotated[int, Field(ge=1, strict=True)] | None = None
    total_steps: Annotated[int, Field(ge=1, strict=True)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100, strict=True)] = 3
    timeout_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 3600.0
    # LoRAs as the API resolved them (ADR-010): hash, scope, size and a signed download URL each.
    # They stay out of the requirement class, so distinct LoRAs never multiply classes.
    loras: LoraList = Field(default_factory=list)

    @field_validator("loras")
    @classmethod
    def _unique_loras(cls, value: list[LoraRef]) -> list[LoraRef]:
        return unique_loras(value)

    @field_validator("payload", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # Before pydantic walks it (recursively): a lone surrogate, NaN, an integer beyond 64
        # bits or a 10,000-deep nesting is refused here, naming its path, never a 500.
        jsonvalue.check(value, "payload", max_depth=jsonvalue.MAX_DEPTH)
        return value

    @model_validator(mode="after")
    def _workflow_fields(self) -> JobSpec:
        # InvalidInput rather than ValueError: pydantic reports a model validator's ValueError with
        # no field, and the caller needs to know which field to fix.
        if (self.step is not None or self.total_steps is not None) and self.workflow_id is None:
            raise InvalidInput(
                "workflow_id: step and total_steps belong to a workflow; give workflow_id too",
                field="workflow_id",
            )
        if self.step and self.total_steps and self.step > self.total_steps:
            raise InvalidInput(
                f"step: step {self.step} is past total_steps {self.total_steps}", field="step"
            )
        return self

    @classmethod
    def parse(cls, data: Any, *, max_payload_bytes: int | None = None) -> JobSpec:
        """Validate untrusted input; raise ``InvalidInput`` naming the first bad field. With
        ``max_payload_bytes``, the payload's JSON size is checked too (``Queue.prepare`` leaves
        it out and checks while encoding the payload, so that it is encoded once)."""
        if isinstance(data, JobSpec):
            spec = data
        else:
            try:
                spec = cls.model_validate(data)
            except ValidationError as exc:
                raise invalid_from_validation(exc) from None
        if max_payload_bytes is not None:
            spec.encoded_payload(max_payload_bytes)
        validate_payload(spec.service, spec.payload)
        return spec

    def encoded_payload(self, max_bytes: int) -> bytes:
        """The payload as JSON, refused when over ``max_bytes`` or when JSON cannot hold it
        (an integer beyond 64 bits, a lone surrogate: orjson raises ``TypeError``)."""
        try:
            raw = orjson.dumps(self.payload)
        except TypeError as exc:
            raise InvalidInput(
                f"payload cannot be stored as JSON: {exc}", field="payload"
            ) from None
        if len(raw) > max_bytes:
            raise PayloadTooLarge(
                f"payload is {len(raw):,} bytes; the limit is {max_bytes:,}", field="payload"
            )
        return raw

    @property
    def requirement_class(self) -> tuple[str, str]:
        """(class id, canonical requirements JSON)."""
        canonical = self.requirements.canonical_json()
        return class_id(self.service, canonical), canonical


class Job(BaseModel):
    """A job as the queue holds it, built from the Redis hash."""

    model_config = ConfigDict(frozen=True)

    id: str
    service: str
    status: JobStatus
    priority: int
    payload: dict[str, Any]
    requirements: Requirements
    customer_id: str | None = None
    workflow_id: str | None = None
    step: int | None = None
    total_steps: int | None = None
    max_attempts: int
    timeout_s: float
    attempts: int = 0
    # Leases that ran out (the worker died or hung): re-queued without spending an attempt, up
    # to ``QueueSettings.max_lost_leases``; then the job fails with category ``lost``.
    lost_leases: int = 0
    progress: float = 0
    message: str | None = None
    result: Any = None
    error: str | None = None
    # The last failure's classification by the error patterns (ADR-009): its category, the
    # pattern that matched (none when the default applied) and what the submitter is told.
    error_category: str | None = None
    error_pattern_id: str | None = None
    error_user_message: str | None = None
    worker_id: str | None = None
    created_at: datetime
    claimed_at: datetime | None = None
    finished_at: datetime | None = None
    retry_at: datetime | None = None
    class_id: str
    # W3C trace context of the submitter, so the worker's spans join the submit's trace.
    traceparent: str | None = None
    loras: list[LoraRef] = Field(default_factory=list)

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> Job:
        """Build from the job hash as decoded strings."""

        def opt(name: str) -> str | None:
            value = fields.get(name)
            return value if value not in (None, "") else None

        def ms(name: str) -> datetime | None:
            value = opt(name)
            return None if value is None else datetime.fromtimestamp(int(value) / 1000, UTC)

        result = opt("result")
        return cls(
            id=fields["id"],
            service=fields["service"],
            status=JobStatus(fields["status"]),
            priority=int(fields["priority"]),
            payload=orjson.loads(fields["payload"]),
            requirements=Requirements.model_validate_json(fields["requirements"]),
            customer_id=opt("customer_id"),
            workflow_id=opt("workflow_id"),
            step=int(v) if (v := opt("step")) else None,
            total_steps=int(v) if (v := opt("total_steps")) else None,
            max_attempts=int(fields["max_attempts"]),
            timeout_s=float(fields["timeout_s"]),
            attempts=int(fields.get("attempts") or 0),
            lost_leases=int(fields.get("lost_leases") or 0),
            progress=float(fields.get("progress") or 0),
            message=opt("message"),
            result=None if result is None else orjson.loads(result),
            error=opt("error"),
            error_category=opt("error_category"),
            error_pattern_id=opt("error_pattern_id"),
            error_user_message=opt("error_user_message"),
            worker_id=opt("worker_id"),
            created_at=ms("created_at") or datetime.fromtimestamp(0, UTC),
            claimed_at=ms("claimed_at"),
            finished_at=ms("finished_at"),
            retry_at=ms("retry_at"),
            class_id=fields["class_id"],
            traceparent=opt("traceparent"),
            loras=decode_loras(fields.get("loras")),
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


def new_job_id() -> str:
    return uuid.uuid4().hex


def pending_score(priority: int, seq: int) -> int:
    """Lower is claimed first: higher priority first, then first submitted first."""
    return ((PRIORITY_MAX - priority) << _SEQ_BITS) + seq


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before attempt ``attempt + 1``: ``base`` doubled per failed attempt, capped, then
    spread by up to ``jitter`` (a fraction) either way, so jobs that failed together (a service
    outage) do not come back together. ``rand`` returns a float in [0, 1)."""
    if attempt < 1:
        raise InvalidInput(f"attempt must be at least 1, got {attempt}", field="attempt")
    delay = float(min(cap, base * (2 ** (attempt - 1))))
    return max(0.0, delay * (1 + jitter * (2 * rand() - 1)))
