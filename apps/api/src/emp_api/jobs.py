"""``/api/jobs``: submit, read, list and cancel the caller's jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from opentelemetry.trace import SpanKind

from emp_api.deps import PrincipalDep, ServicesDep
from emp_api.outputs import with_fresh_urls
from emp_api.schemas import ERRORS, JobPage, SubmittedJob
from emp_core.jobs.capabilities import Service
from emp_core.jobs.job import Job, JobStatus
from emp_core.telemetry import current_traceparent
from emp_sql.listing import CURSOR_MAX, CURSOR_PATTERN, MAX_PAGE
from emp_sql.loras import JobRequest

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses={**ERRORS})

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="A job id.")]


@router.post("", status_code=201, summary="Submit a job")
async def submit_job(
    request: JobRequest,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Retrying with the same key within 24 h returns the same job.",
        ),
    ] = None,
) -> SubmittedJob:
    """Enqueue a job for the caller (its `customer_id` is the caller's user id). With an
    `Idempotency-Key`, a repeated request returns the first request's job and sets
    `Idempotent-Replayed: true`. LoRAs are named by id (`loras: [{"id": …, "weight": 0.8}]`):
    each must be the caller's own or shared (otherwise 404), and the job stores its hash, size,
    scope and a signed download URL. `warnings` says, for example, that no live worker serves
    the job's service (the job is accepted and waits)."""
    await services.limiter.take(
        services.rules.submit, principal.user_id, message="you are submitting jobs too fast"
    )
    spec = request.to_spec(await services.loras.resolve(principal, request.loras))
    telemetry = services.telemetry
    with telemetry.tracer().start_as_current_span(
        "job.submit", kind=SpanKind.PRODUCER, attributes={"emp.job.service": spec.service}
    ):
        outcome = await services.catalog.submit(
            spec, principal, idempotency_key=idempotency_key, traceparent=current_traceparent()
        )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        telemetry.jobs.submitted(spec.service)
    return SubmittedJob(**dict(outcome.job), warnings=list(outcome.warnings))


@router.get("", summary="List the caller's jobs, newest first")
async def list_jobs(
    principal: PrincipalDep,
    services: ServicesDep,
    status: JobStatus | None = None,
    service: Annotated[Service | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=CURSOR_MAX,
            pattern=CURSOR_PATTERN,
            description=(
                "The `next_cursor` of the previous page, sent back as it came. With one queue it "
                "is a number; with several queues (`EMP_QUEUE_ROUTES`) it is `name:n,name:n`, "
                "one position per queue. A cursor this API did not return, or one naming a "
                "queue the deployment does not have, is 422 on `cursor`."
            ),
        ),
    ] = None,
    customer_id: Annotated[
        str | None, Query(max_length=128, description="Admins only: another customer's jobs.")
    ] = None,
) -> JobPage:
    """The caller's jobs in every queue of the deployment, newest first by submit time, `limit`
    at a time; filters narrow the page, and a filtered page may hold fewer than `limit` jobs
    (each request reads a bounded number) while `next_cursor` still leads on."""
    page = await services.catalog.list(
        principal, customer_id=customer_id, status=status, service=service, limit=limit,
        cursor=cursor,
    )  # fmt: skip
    store = services.backends.blobs
    jobs = [await with_fresh_urls(job, store) for job in page.jobs]
    return JobPage(jobs=jobs, next_cursor=page.next_cursor)


@router.get("/{job_id}", summary="Read a job")
async def get_job(job_id: JobId, principal: PrincipalDep, services: ServicesDep) -> Job:
    """The job; the download URLs of its outputs are signed afresh on every read."""
    job = await services.catalog.get(job_id, principal)
    return await with_fresh_urls(job, services.backends.blobs)


@router.post("/{job_id}/cancel", summary="Cancel a job that has not finished")
async def cancel_job(job_id: JobId, principal: PrincipalDep, services: ServicesDep) -> Job:
    return await services.catalog.cancel(job_id, principal)
