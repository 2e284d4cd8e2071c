"""``emp.v1.JobService``: the REST job routes over gRPC, with the same tokens (metadata
``authorization: Bearer …``), the same owner rules (``JobCatalog``) and the same events as the
WebSocket (the job's Redis stream: replay, then live, ending after the terminal event)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from emp.v1 import job_pb2, job_pb2_grpc
from emp_api.rpc.errors import guarded, guarded_stream
from emp_api.state import Services
from emp_core.errors import InvalidInput
from emp_core.jobs.events import EventType, JobEvent, follow
from emp_core.jobs.job import Job, JobSpec
from emp_core.telemetry import current_traceparent
from emp_rpc.convert import STATUS_FROM_PROTO, event_to_proto, job_to_proto, submit_to_spec_data
from emp_rpc.metadata import token_from
from emp_sql.auth import Principal
from emp_sql.listing import MAX_PAGE, parse_cursor

_JOB_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _job_id(value: str) -> str:
    if not value:
        raise InvalidInput("job_id is required", field="job_id")
    if len(value) > 64 or not set(value) <= _JOB_ID_CHARS:
        raise InvalidInput("job_id is not a job id", field="job_id")
    return value


def _final_event(job: Job) -> JobEvent:
    """A terminal event rebuilt from the job's record, for a job whose stream has expired (as
    the WebSocket does)."""
    return JobEvent(
        event_id="", job_id=job.id, type=EventType(job.status.value), status=job.status.value,
        at=job.finished_at or datetime.now(UTC), service=job.service, attempt=job.attempts,
        worker_id=job.worker_id, progress=job.progress, error=job.error,
    )  # fmt: skip


class JobService(job_pb2_grpc.JobServiceServicer):  # type: ignore[misc]
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _principal(self, context: Any) -> Principal:
        return await self.services.auth.authenticate(token_from(context.invocation_metadata()))

    async def SubmitJob(
        self, request: job_pb2.SubmitJobRequest, context: Any
    ) -> job_pb2.SubmitJobResponse:
        async def call() -> job_pb2.SubmitJobResponse:
            principal = await self._principal(context)
            key = request.idempotency_key if request.HasField("idempotency_key") else None
            if key is not None and not 1 <= len(key) <= 255:
                raise InvalidInput("idempotency_key has 1-255 characters", field="idempotency_key")
            s = self.services
            spec = JobSpec.parse(
                submit_to_spec_data(request), max_payload_bytes=s.queue.settings.max_payload_bytes
            )
            outcome = await s.catalog.submit(
                spec, principal, idempotency_key=key, traceparent=current_traceparent()
            )
            if not outcome.replayed:
                s.telemetry.jobs.submitted(spec.service)
            return job_pb2.SubmitJobResponse(
                job=job_to_proto(outcome.job), idempotent_replayed=outcome.replayed
            )

        return await guarded(context, call)

    async def GetJob(self, request: job_pb2.GetJobRequest, context: Any) -> job_pb2.GetJobResponse:
        async def call() -> job_pb2.GetJobResponse:
            principal = await self._principal(context)
            job = await self.services.catalog.get(_job_id(request.job_id), principal)
            return job_pb2.GetJobResponse(job=job_to_proto(job))

        return await guarded(context, call)

    async def ListJobs(
        self, request: job_pb2.ListJobsRequest, context: Any
    ) -> job_pb2.ListJobsResponse:
        async def call() -> job_pb2.ListJobsResponse:
            principal = await self._principal(context)
            size = request.page_size or 50
            if not 1 <= size <= MAX_PAGE:
                raise InvalidInput(f"page_size must be 1-{MAX_PAGE}", field="page_size")
            token = request.page_token or None
            # Checked here too, so that a bad token is reported on the field this API names.
            parse_cursor(token, self.services.catalog.queues.names, field="page_token")
            page = await self.services.catalog.list(
                principal,
                customer_id=request.customer_id if request.HasField("customer_id") else None,
                status=STATUS_FROM_PROTO.get(request.status) if request.status else None,
                service=request.service if request.HasField("service") else None,
                limit=size,
                cursor=token,
            )
            return job_pb2.ListJobsResponse(
                jobs=[job_to_proto(j) for j in page.jobs], next_page_token=page.next_cursor or ""
            )

        return await guarded(context, call)

    async def CancelJob(
        self, request: job_pb2.CancelJobRequest, context: Any
    ) -> job_pb2.CancelJobResponse:
        async def call() -> job_pb2.CancelJobResponse:
            principal = await self._principal(context)
            job = await self.services.catalog.cancel(_job_id(request.job_id), principal)
            return job_pb2.CancelJobResponse(job=job_to_proto(job))

        return await guarded(context, call)

    async def WatchJob(
        self, request: job_pb2.WatchJobRequest, context: Any
    ) -> AsyncIterator[job_pb2.WatchJobResponse]:
        async for event in guarded_stream(context, self._watch(request, context)):
            yield job_pb2.WatchJobResponse(event=event_to_proto(event))

    async def _watch(
        self, request: job_pb2.WatchJobRequest, context: Any
    ) -> AsyncIterator[JobEvent]:
        principal = await self._principal(context)
        job_id = _job_id(request.job_id)
        job = await self.services.catalog.get(job_id, principal)  # NOT_FOUND unless the owner's
        q = self.services.queue
        ended = False
        if await q.redis.exists(q.keys.events(job_id)):
            async for event in follow(q.redis, q.keys, job_id):
                yield event
                ended = event.is_terminal
        if not ended:
            job = await self.services.catalog.get(job_id, principal)
            if job.is_terminal:
                yield _final_event(job)
