"""Response shapes of the API that ``emp_core`` does not already define (a job is
``emp_core.jobs.job.Job``; a job event is ``emp_core.jobs.events.JobEvent``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from emp_core.jobs.job import Job


class ErrorBody(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"code", "message", "field"}}``."""

    error: ErrorBody


class SubmittedJob(Job):
    """The job as stored, and what the caller should know about it."""

    warnings: list[str] = Field(
        default_factory=list,
        description="E.g. that no live worker serves the job's service: it waits until one does.",
    )


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(
        description=(
            "Pass as `cursor` for the next page, unchanged; null on the last page. A number with "
            "one queue, `name:n,name:n` (one position per queue) with several."
        )
    )


class WorkerOut(BaseModel):
    id: str
    machine: str | None
    services: list[str]
    capabilities: dict[str, Any]
    state: str = Field(description="idle, busy or draining")
    current_job: str | None
    last_seen: datetime


class ServiceDepth(BaseModel):
    service: str
    pending: int
    oldest_pending_age_s: float | None


class QueueOut(BaseModel):
    queue: str
    services: list[ServiceDepth]
    workers_idle: int
    workers_busy: int


class HealthOut(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str]


class VersionOut(BaseModel):
    api: str
    core: str
    library: int = Field(description="Version of the Redis Function library this code needs.")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing, unknown or revoked token",
        404: "No such job, or not yours",
        413: "Body over the size limit",
        422: "Invalid input; `field` names it",
        429: "Too many requests; `Retry-After` says when to try again",
    }.items()
}
