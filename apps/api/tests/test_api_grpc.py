"""JobService over gRPC against a real server on a free port, beside the HTTP app: every RPC,
the authorization matrix, bad messages and their status codes, WatchJob's replay-then-live
stream, and the health and reflection services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
from api_helpers import Api, running_api
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from emp.v1 import job_pb2, job_pb2_grpc
from emp_core.settings import QueueSettings
from emp_rpc.metadata import ERROR_FIELD, bearer
from emp_web.testing import Account, claim

SUBMIT = job_pb2.SubmitJobRequest(service="simulation", payload_json='{"steps": 3}')


@pytest.fixture
async def api(settings: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    async with running_api(settings, database_url, grpc_port=0) as running:
        yield running


@pytest.fixture
async def channel(api: Api) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.app.state.grpc_port}") as ch:
        yield ch


@pytest.fixture
def jobs(channel: grpc.aio.Channel) -> Any:
    return job_pb2_grpc.JobServiceStub(channel)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def field_of(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(ERROR_FIELD)


async def test_submit_get_list_cancel(jobs: Any, accounts: dict[str, Account]) -> None:
    me = bearer(accounts["alice"].token)
    request = job_pb2.SubmitJobRequest(
        service="simulation", payload_json='{"steps": 3, "big": 12345678901}', priority=70,
        idempotency_key="k-1",
    )  # fmt: skip
    first = await jobs.SubmitJob(request, metadata=me)
    job = first.job
    assert (job.status, job.priority, first.idempotent_replayed) == (
        job_pb2.JOB_STATUS_PENDING, 70, False,
    )  # fmt: skip
    assert orjson.loads(job.payload_json) == {"steps": 3, "big": 12345678901}  # ints stay ints
    assert job.customer_id == accounts["alice"].user_id
    again = await jobs.SubmitJob(request, metadata=me)
    assert (again.job.id, again.idempotent_replayed) == (job.id, True)

    got = await jobs.GetJob(job_pb2.GetJobRequest(job_id=job.id), metadata=me)
    assert got.job.id == job.id
    listed = await jobs.ListJobs(job_pb2.ListJobsRequest(page_size=10), metadata=me)
    assert job.id in [j.id for j in listed.jobs]
    pending = await jobs.ListJobs(
        job_pb2.ListJobsRequest(status=job_pb2.JOB_STATUS_COMPLETED), metadata=me
    )
    assert job.id not in [j.id for j in pending.jobs]
    cancelled = await jobs.CancelJob(job_pb2.CancelJobRequest(job_id=job.id), metadata=me)
    assert cancelled.job.status == job_pb2.JOB_STATUS_CANCELLED
    error = await refused(jobs.CancelJob(job_pb2.CancelJobRequest(job_id=job.id), metadata=me))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_authorization_matrix(jobs: Any, accounts: dict[str, Account]) -> None:
    alice, bob, admin = (bearer(accounts[n].token) for n in ("alice", "bob", "admin"))
    job = (await jobs.SubmitJob(SUBMIT, metadata=alice)).job
    by_id = job_pb2.GetJobRequest(job_id=job.id)
    for metadata in ((), (("authorization", "Bearer nope"),), (("authorization", "Basic x"),)):
        error = await refused(jobs.GetJob(by_id, metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        error = await refused(jobs.SubmitJob(SUBMIT, metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    for call in (
        jobs.GetJob(by_id, metadata=bob),
        jobs.CancelJob(job_pb2.CancelJobRequest(job_id=job.id), metadata=bob),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND
    watch = jobs.WatchJob(job_pb2.WatchJobRequest(job_id=job.id), metadata=bob)
    error = await refused(_drain(watch))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    listed = await jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=bob)
    assert job.id not in [j.id for j in listed.jobs]
    others = job_pb2.ListJobsRequest(customer_id=accounts["alice"].user_id)
    error = await refused(jobs.ListJobs(others, metadata=bob))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await jobs.GetJob(by_id, metadata=admin)).job.id == job.id
    assert job.id in [j.id for j in (await jobs.ListJobs(others, metadata=admin)).jobs]


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (job_pb2.SubmitJobRequest(payload_json="{}"), "INVALID_ARGUMENT", "service"),
        (job_pb2.SubmitJobRequest(service="simulation", payload_json="{"), "INVALID_ARGUMENT",
         "payload_json"),
        (job_pb2.SubmitJobRequest(service="simulation", payload_json="[1]"), "INVALID_ARGUMENT",
         "payload_json"),
        (job_pb2.SubmitJobRequest(service="simulation", priority=5000), "INVALID_ARGUMENT",
         "priority"),
        (job_pb2.SubmitJobRequest(service="simulation", max_attempts=0), "INVALID_ARGUMENT",
         "max_attempts"),
        (job_pb2.SubmitJobRequest(service="simulation", requirements_json='{"gpu": "x"}'),
         "INVALID_ARGUMENT", "requirements_json"),
        (job_pb2.SubmitJobRequest(
            service="simulation", payload_json=orjson.dumps({"x": "a" * 1_200_000}).decode()),
         "RESOURCE_EXHAUSTED", "payload_json"),
    ],
)  # fmt: skip
async def test_bad_submits(
    jobs: Any, accounts: dict[str, Account], request_: Any, code: str, field: str
) -> None:
    error = await refused(jobs.SubmitJob(request_, metadata=bearer(accounts["alice"].token)))
    assert error.code() == getattr(grpc.StatusCode, code), error.details()
    assert (field_of(error) or "").startswith(field), error.details()
    assert error.details().startswith(field)


async def test_bad_lookups_and_oversized_messages(jobs: Any, accounts: dict[str, Account]) -> None:
    me = bearer(accounts["alice"].token)
    for job_id, code in (("", "INVALID_ARGUMENT"), ("a b", "INVALID_ARGUMENT"),
                         ("nope", "NOT_FOUND")):  # fmt: skip
        error = await refused(jobs.GetJob(job_pb2.GetJobRequest(job_id=job_id), metadata=me))
        assert error.code() == getattr(grpc.StatusCode, code)
    error = await refused(jobs.ListJobs(job_pb2.ListJobsRequest(page_size=5000), metadata=me))
    assert (error.code(), field_of(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "page_size")
    for token in ("x1", "nowhere:3"):  # not a token, a queue this deployment does not have
        bad = job_pb2.ListJobsRequest(page_token=token)
        error = await refused(jobs.ListJobs(bad, metadata=me))
        assert (error.code(), field_of(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    huge = job_pb2.SubmitJobRequest(service="simulation", payload_json="x" * 3_000_000)
    error = await refused(jobs.SubmitJob(huge, metadata=me))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_watch_replays_then_follows_and_ends(
    api: Api, jobs: Any, accounts: dict[str, Account]
) -> None:
    me = bearer(accounts["alice"].token)
    job = (await jobs.SubmitJob(SUBMIT, metadata=me)).job
    queue = api.services.queue
    claimed = await claim(queue)
    await queue.progress(claimed, 40, "warming up")
    stream = jobs.WatchJob(job_pb2.WatchJobRequest(job_id=job.id), metadata=me)
    seen = []
    async for item in stream:
        seen.append(item.event)
        if item.event.progress == 40:  # replayed; the rest comes live
            await queue.progress(claimed, 80, "nearly")
            await queue.complete(claimed, {"ok": True})
    types = [job_pb2.EventType.Name(e.type) for e in seen]
    assert types == [
        "EVENT_TYPE_SUBMITTED", "EVENT_TYPE_CLAIMED", "EVENT_TYPE_PROGRESS",
        "EVENT_TYPE_PROGRESS", "EVENT_TYPE_COMPLETED",
    ]  # fmt: skip
    assert [e.progress for e in seen if e.type == job_pb2.EVENT_TYPE_PROGRESS] == [40, 80]
    assert seen[-1].status == job_pb2.JOB_STATUS_COMPLETED
    # A finished job: the stream replays to the end and closes.
    again = await _drain(jobs.WatchJob(job_pb2.WatchJobRequest(job_id=job.id), metadata=me))
    assert [i.event.event_id for i in again] == [e.event_id for e in seen]


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "emp.v1.JobService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    [answer] = [a async for a in reflect.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in answer.list_services_response.service}
    assert {"emp.v1.JobService", "grpc.health.v1.Health"} <= names
