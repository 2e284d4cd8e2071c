"""My jobs (a filtered, paginated table whose running rows refresh themselves) and the submit
form. Admins see everyone's jobs, or one person's.

A row of an unfinished job asks for itself again every two seconds (``hx-trigger="every 2s"``,
``hx-swap="outerHTML"``) and renders without the trigger once the job has finished, so a finished
table stops polling by itself.
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from emp_core.errors import InvalidInput, NotFound
from emp_core.jobs.job import JobStatus
from emp_core.queue.backlog import backlogs
from emp_sql.auth import Principal
from emp_sql.catalog import JobPage
from emp_sql.listing import CURSOR_MAX, CURSOR_PATTERN
from emp_sql.loras import JobRequest
from emp_sql.models import FlatFile
from emp_sql.users import UserRepository
from emp_studio.deps import ServicesDep, ViewerDep, verify_csrf
from emp_studio.forms import JobForm, field_errors
from emp_studio.render import is_htmx, page, redirect
from emp_studio.state import Services

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])

EVERYONE, MINE = "", "me"
_STATUSES = {s.value: s for s in JobStatus}
Filter = Annotated[str, Query(max_length=128)]


async def known_services(services: Services) -> list[str]:
    """Services someone can run or has queued, for the form's suggestions."""
    workers = await services.workers.live()
    names = {s for w in workers for s in w.services}
    names |= {d.service for d in await backlogs(services.queues)}
    return sorted(names | {"simulation"})


async def _emails(services: Services, viewer: Principal) -> dict[str, str]:
    """User id -> email, for an admin's owner column and filter; nothing for a user."""
    if not viewer.is_admin:
        return {}
    async with services.database.session() as db:
        return {u.id: u.email for u in await UserRepository(db).list_all()}


async def _listing(
    services: Services,
    viewer: Principal,
    emails: dict[str, str],
    *,
    owner: str,
    status: JobStatus | None,
    service: str | None,
    cursor: str | None,
) -> JobPage:
    catalog, limit = services.catalog, services.settings.page_size
    if viewer.is_admin and owner == EVERYONE:
        # "" is the owner of jobs submitted without one (the CLI's, make dev's demo jobs).
        return await catalog.list_merged(
            viewer, [*emails, ""], status=status, service=service, limit=limit, cursor=cursor
        )
    customer = viewer.user_id if owner in (MINE, EVERYONE) else owner
    return await catalog.list(
        viewer, customer_id=customer, status=status, service=service, limit=limit,
        cursor=cursor,
    )  # fmt: skip


@router.get("/jobs")
async def jobs_page(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    status: Filter = "",
    service: Filter = "",
    owner: Filter = EVERYONE,
    # A number with one queue, ``name:n,name:n`` with several (``emp_sql.listing``); the
    # catalog refuses one naming a queue the deployment does not have.
    cursor: Annotated[str, Query(max_length=CURSOR_MAX, pattern=rf"^$|{CURSOR_PATTERN}")] = "",
) -> Response:
    emails = await _emails(services, viewer)
    if not viewer.is_admin or (owner not in (EVERYONE, MINE) and owner not in emails):
        owner = MINE if viewer.is_admin else EVERYONE
    result = await _listing(
        services, viewer, emails, owner=owner, status=_STATUSES.get(status),
        service=service.strip() or None, cursor=cursor or None,
    )  # fmt: skip
    filters = {"status": status if status in _STATUSES else "", "service": service.strip()}
    if viewer.is_admin:
        filters["owner"] = owner
    query = {k: v for k, v in filters.items() if v}
    context = {
        "nav": "jobs",
        "jobs": result.jobs,
        "filters": filters,
        "filtered": bool(query),
        "emails": emails,
        "services": await known_services(services),
        "first_url": f"/jobs?{urlencode(query)}" if cursor else None,
        "older_url": (
            f"/jobs?{urlencode({**query, 'cursor': result.next_cursor})}"
            if result.next_cursor
            else None
        ),
    }
    if is_htmx(request) and request.headers.get("hx-target") == "jobs-results":
        return page(request, "_jobs_results.html", context)
    return page(request, "jobs.html", context)


@router.get("/jobs/new")
async def new_job_page(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    context = {"nav": "new", "form": JobForm(), "errors": {}}
    context |= {"services": await known_services(services), "loras": await _loras(services, viewer)}
    return page(request, "job_new.html", context)


async def _loras(services: Services, viewer: Principal) -> list[FlatFile]:
    """The LoRAs the viewer may pick: own and shared (an admin's own and shared only: the
    picker is for their own jobs)."""
    rows = await services.loras.list_visible(viewer)
    return [r for r in rows if r.shared or r.owner_id == viewer.user_id]


@router.post("/jobs")
async def submit_job(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    form = JobForm.from_form(await request.form())
    try:
        limit = services.queue.settings.max_payload_bytes
        job_request = JobRequest.parse_request(form.to_spec(), max_payload_bytes=limit)
        loras = await services.loras.resolve(viewer, job_request.loras)
        await services.limiter.take(
            services.rules.submit, viewer.user_id, message="You are submitting jobs too fast"
        )
        submitted = await services.catalog.submit(job_request.to_spec(loras), viewer)
    except (InvalidInput, NotFound) as exc:
        context = {
            "nav": "new",
            "form": form,
            "errors": field_errors(exc),
            "services": await known_services(services),
            "loras": await _loras(services, viewer),
        }
        name = "_job_form.html" if is_htmx(request) else "job_new.html"
        # 422 even for an oversized payload (413): the page answers with the form either way.
        return page(request, name, context, status_code=422)
    job = submitted.job
    logger.info("user %s submitted job %s (%s)", viewer.email, job.id, job.service)
    return redirect(request, f"/jobs/{job.id}")


@router.get("/jobs/{job_id}/row")
async def job_row(
    request: Request, job_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    job = await services.catalog.get(job_id, viewer)
    emails: dict[str, str] = {}
    if viewer.is_admin and job.customer_id:
        async with services.database.session() as db:
            user = await UserRepository(db).by_id(job.customer_id)
        emails = {user.id: user.email} if user else {}
    return page(request, "_job_row.html", {"job": job, "emails": emails})
