"""Job forensics (owners and admins) and operator actions (admins, audited): issue 17."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from emp_api.deps import AdminDep, PrincipalDep, ServicesDep
from emp_api.schemas import ERRORS, ErrorResponse
from emp_core.jobs.capabilities import Service
from emp_core.queue.bulk import JobFilter
from emp_core.queue.position import QueuePosition
from emp_core.registry.control import CommandReply
from emp_core.registry.machines import MachineCommand
from emp_sql.analytics import Analytics, analytics
from emp_sql.audit import AuditEntry
from emp_sql.forensics import ForensicsReader, JobForensics
from emp_sql.operations import Operations

router = APIRouter(
    tags=["operations"],
    responses={**ERRORS, 403: {"model": ErrorResponse, "description": "Not an admin"}},
)

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="A job id.")]
Reason = Annotated[str, Field(min_length=1, max_length=2000, description="Why (audited).")]


class RetryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason
    priority: Annotated[int, Field(ge=0, le=1000, strict=True)] | None = None


class RequeueBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["pending", "retrying", "running", "failed"]
    service: Service | None = None
    customer_id: Annotated[str, Field(max_length=128)] | None = None
    category: Annotated[str, Field(max_length=32)] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def to_filter(self) -> JobFilter:
        return JobFilter(**self.model_dump())


class BulkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["retry", "cancel"]
    filter: FilterBody
    reason: Reason
    dry_run: bool = False
    priority: Annotated[int, Field(ge=0, le=1000, strict=True)] | None = None


class BulkOut(BaseModel):
    action: AuditEntry
    matched: int
    touched: int
    skipped: int
    batches: int
    largest_batch: int


class PurgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    before: datetime = Field(description="Finished jobs that ended before this time (with zone).")
    reason: Reason


class PurgeOut(BaseModel):
    action: AuditEntry
    archive_rows: int
    redis_jobs: int


@router.get("/api/jobs/{job_id}/forensics", summary="How a job went: attempts and timeline")
async def job_forensics(
    job_id: JobId, principal: PrincipalDep, services: ServicesDep
) -> JobForensics:
    """Every attempt (worker, machine, claimed/started/ended, waited and run time, progress,
    failure category and message, retry delay), lost leases, the event timeline; and for admins
    the operator actions on the job. An owner sees their own job without worker, machine and
    pattern ids; another user's job is 404."""
    return await ForensicsReader(services.catalog).read(job_id, principal)


@router.get("/api/jobs/{job_id}/position", summary="A pending job's place in line and ETA")
async def job_position(
    job_id: JobId, principal: PrincipalDep, services: ServicesDep
) -> QueuePosition:
    """`rank`: the jobs that the workers able to run this one would take first; `eta_s` (to
    start) and `finish_eta_s` from the service's recent run times and those workers' slots;
    `reason` instead of an ETA, e.g. "no live worker can run this job". Its cost does not grow
    with the number of pending jobs."""
    return await ForensicsReader(services.catalog).position(job_id, principal)


def _ops(services: ServicesDep) -> Operations:
    return Operations(services.queue, services.database)


@router.post("/api/admin/jobs/{job_id}/retry", summary="Retry a failed job (admins)")
async def retry_job(
    job_id: JobId, body: RetryBody, admin: AdminDep, services: ServicesDep
) -> AuditEntry:
    """A failed or dead-lettered job back to pending with a fresh attempt budget, optionally at
    another priority."""
    return await _ops(services).retry(admin, job_id, reason=body.reason, priority=body.priority)


@router.post("/api/admin/jobs/{job_id}/requeue", summary="Requeue a stuck job (admins)")
async def requeue_job(
    job_id: JobId, body: RequeueBody, admin: AdminDep, services: ServicesDep
) -> AuditEntry:
    """A claimed, running or retrying job back to pending now; its worker is told to drop it."""
    return await _ops(services).requeue(admin, job_id, reason=body.reason)


@router.post("/api/admin/jobs/bulk", summary="Retry or cancel jobs by filter (admins)")
async def bulk_action(body: BulkBody, admin: AdminDep, services: ServicesDep) -> BulkOut:
    """In batches of at most 200 jobs per Redis call; `dry_run` counts without writing."""
    entry, result = await _ops(services).bulk(
        admin, body.action, body.filter.to_filter(), reason=body.reason, dry_run=body.dry_run,
        priority=body.priority,
    )  # fmt: skip
    return BulkOut(
        action=entry, matched=result.matched, touched=result.touched, skipped=result.skipped,
        batches=result.calls, largest_batch=result.largest_batch,
    )  # fmt: skip


@router.post("/api/admin/jobs/purge", summary="Forget finished jobs older than a date (admins)")
async def purge_jobs(body: PurgeBody, admin: AdminDep, services: ServicesDep) -> PurgeOut:
    entry, archived, dead = await _ops(services).purge(admin, body.before, reason=body.reason)
    return PurgeOut(action=entry, archive_rows=archived, redis_jobs=dead)


class ControlOut(BaseModel):
    answered: bool
    reply: CommandReply | None


@router.post("/api/admin/machines/{machine_id}/control", summary="Command a machine and wait")
async def control_machine(
    machine_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")],
    command: MachineCommand,
    admin: AdminDep,
    services: ServicesDep,
) -> ControlOut:
    """`drain`, `restart_worker` (`worker_id`), `restart_all` or `logs` (`worker_id`, `lines`),
    carried out by the machine's supervisor, whose answer comes back within 5 s; `answered:
    false` when the machine did not answer (gone, or not listening)."""
    answer = await _ops(services).machine(admin, machine_id, command)
    return ControlOut(answered=answer is not None, reply=answer)


_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


@router.get("/api/admin/analytics", summary="Wait/run percentiles, throughput, failures (admins)")
async def fleet_analytics(
    admin: AdminDep, services: ServicesDep, window: Literal["1h", "24h", "7d"] = "24h"
) -> Analytics:
    """From the SQL archive of finished jobs in the window (at most 20,000, newest first)."""
    return await analytics(services.database, _WINDOWS[window])


@router.get("/api/admin/actions", summary="Recent operator actions (admins)")
async def recent_actions(
    admin: AdminDep, services: ServicesDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[AuditEntry]:
    return await _ops(services).recent(admin, limit)
