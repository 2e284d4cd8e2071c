"""Job forensics and operator actions in the studio (issue 17).

``/jobs/{id}/forensics``: every attempt of a job (worker, machine, times, progress, failure),
lost leases, the timeline and, for admins, the operator actions on it with forms to retry a
failed job or requeue a stuck one. ``/admin/operations``: bulk retry or cancel by filter with a
dry run, purge, and the audit trail. Owners see their own job's forensics without the fleet's
internals; every action is admin-only and audited (``emp_sql.operations``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from emp_core.errors import EmpError, InvalidInput
from emp_core.queue.bulk import JobFilter
from emp_sql.analytics import analytics
from emp_sql.auth import Principal
from emp_sql.forensics import ForensicsReader
from emp_sql.operations import Operations
from emp_studio import timeline
from emp_studio.deps import AdminDep, ServicesDep, ViewerDep, verify_csrf
from emp_studio.render import page, redirect
from emp_studio.state import Services

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])

_STATUSES = ("pending", "retrying", "running", "failed")


async def _forensics_page(
    request: Request,
    services: Services,
    job_id: str,
    viewer: Principal,
    *,
    error: str | None = None,
    done: str | None = None,
    status_code: int = 200,
) -> Response:
    seen = await ForensicsReader(services.catalog).read(job_id, viewer)
    f = seen.forensics
    context: dict[str, Any] = {
        "nav": "jobs",
        "job_id": job_id,
        "f": f,
        "actions": seen.actions,
        "position": seen.position,
        "timeline": timeline.entries(f.events),
        "error": error,
        "done": done,
    }
    return page(request, "job_forensics.html", context, status_code=status_code)


@router.get("/jobs/{job_id}/forensics")
async def forensics_page(
    request: Request, job_id: str, viewer: ViewerDep, services: ServicesDep,
    done: str | None = None,
) -> Response:  # fmt: skip
    return await _forensics_page(request, services, job_id, viewer, done=done)


async def _act(
    request: Request, services: Services, admin: Principal, job_id: str, what: str,
    reason: str, priority: str,
) -> Response:  # fmt: skip
    ops = Operations(services.queue, services.database)
    try:
        if what == "retry":
            level = None
            if priority.strip():
                if not priority.strip().isdigit():
                    raise InvalidInput("must be a whole number from 0 to 1000", field="priority")
                level = int(priority)
            await ops.retry(admin, job_id, reason=reason, priority=level)
        else:
            await ops.requeue(admin, job_id, reason=reason)
    except EmpError as exc:
        if exc.status_code not in (409, 422):
            raise
        message = f"{exc.field}: {exc.message}" if exc.field else exc.message
        return await _forensics_page(
            request, services, job_id, admin, error=message, status_code=422
        )
    logger.info("%s: %s of job %s (%s)", admin.email, what, job_id, reason)
    return redirect(request, f"/jobs/{job_id}/forensics?done={what}")


@router.post("/jobs/{job_id}/retry")
async def retry_job(
    request: Request, job_id: str, admin: AdminDep, services: ServicesDep,
    reason: Annotated[str, Form(max_length=2000)] = "",
    priority: Annotated[str, Form(max_length=8)] = "",
) -> Response:  # fmt: skip
    return await _act(request, services, admin, job_id, "retry", reason, priority)


@router.post("/jobs/{job_id}/requeue")
async def requeue_job(
    request: Request, job_id: str, admin: AdminDep, services: ServicesDep,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:  # fmt: skip
    return await _act(request, services, admin, job_id, "requeue", reason, "")


# --- bulk ----------------------------------------------------------------------------------------
async def _operations_page(
    request: Request, services: Services, admin: Principal, *,
    form: dict[str, str] | None = None, result: dict[str, Any] | None = None,
    error: str | None = None, status_code: int = 200,
) -> Response:  # fmt: skip
    recent = await Operations(services.queue, services.database).recent(admin, 30)
    context = {
        "nav": "operations",
        "form": form or {"status": "failed", "action": "retry"},
        "statuses": _STATUSES,
        "result": result,
        "error": error,
        "recent": recent,
    }
    return page(request, "operations.html", context, status_code=status_code)


@router.get("/admin/operations")
async def operations_page(request: Request, admin: AdminDep, services: ServicesDep) -> Response:
    return await _operations_page(request, services, admin)


def _time(value: str, field: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("is not a date and time (YYYY-MM-DDTHH:MM, UTC)", field=field) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@router.post("/admin/operations/bulk")
async def bulk_action(
    request: Request, admin: AdminDep, services: ServicesDep,
    action: Annotated[str, Form(max_length=16)] = "retry",
    status: Annotated[str, Form(max_length=16)] = "failed",
    service: Annotated[str, Form(max_length=64)] = "",
    customer_id: Annotated[str, Form(max_length=128)] = "",
    category: Annotated[str, Form(max_length=32)] = "",
    created_after: Annotated[str, Form(max_length=40)] = "",
    created_before: Annotated[str, Form(max_length=40)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    mode: Annotated[str, Form(max_length=8)] = "dry",
) -> Response:  # fmt: skip
    form = {"action": action, "status": status, "service": service, "customer_id": customer_id,
            "category": category, "created_after": created_after,
            "created_before": created_before, "reason": reason}  # fmt: skip
    try:
        if status not in _STATUSES:
            raise InvalidInput(f"must be one of {', '.join(_STATUSES)}", field="status")
        flt = JobFilter(
            status=status,  # type: ignore[arg-type]  # checked above
            service=service.strip() or None,
            customer_id=customer_id.strip() or None,
            category=category.strip() or None,
            created_after=_time(created_after, "created_after"),
            created_before=_time(created_before, "created_before"),
        )
        entry, outcome = await Operations(services.queue, services.database).bulk(
            admin, action, flt, reason=reason, dry_run=mode != "run"
        )
    except EmpError as exc:
        if exc.status_code not in (409, 422):
            raise
        message = f"{exc.field}: {exc.message}" if exc.field else exc.message
        return await _operations_page(
            request, services, admin, form=form, error=message, status_code=422
        )
    result = {"dry_run": entry.dry_run, "action": action, "matched": outcome.matched,
              "touched": outcome.touched, "batches": outcome.calls, "id": entry.id}  # fmt: skip
    return await _operations_page(request, services, admin, form=form, result=result)


# --- analytics -----------------------------------------------------------------------------------
_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


@router.get("/admin/analytics")
async def analytics_page(
    request: Request, admin: AdminDep, services: ServicesDep, window: str = "24h"
) -> Response:
    if window not in _WINDOWS:
        raise InvalidInput("must be 1h, 24h or 7d", field="window")
    stats = await analytics(services.database, _WINDOWS[window])
    peak = max([*stats.failures_by_category.values(), 1])
    context = {"nav": "operations", "stats": stats, "window": window, "windows": list(_WINDOWS),
               "peak": peak}  # fmt: skip
    return page(request, "analytics.html", context)
