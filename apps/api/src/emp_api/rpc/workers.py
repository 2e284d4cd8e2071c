"""``emp.v1.WorkerService.Connect``: a worker that cannot reach Redis works through one stream.

The server runs the same Lua claims, leases and fencing on the worker's behalf (``Queue``): a
``Ready`` claims with the worker's capabilities (waiting, while nothing is there, until
something is or the stream ends), each report carries the job's fencing token, and a stale one
is answered with ``Refused``, and a cancelled job's worker is told with ``CancelAssignment``.
Leases are renewed only by the worker's ``Heartbeat`` messages, so a stream that drops (or a
worker that stops sending) loses its lease exactly like a dead Redis worker: the reaper returns
the job to pending and it runs elsewhere.

Workers are operators' processes: the stream needs an admin token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import ValidationError

from emp.v1 import worker_pb2, worker_pb2_grpc
from emp_api.rpc.errors import abort
from emp_api.state import Services
from emp_core.errors import EmpError, InvalidInput, StaleToken, invalid_from_validation
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import ClaimedJob
from emp_rpc.metadata import token_from

logger = logging.getLogger(__name__)

# While nothing can be claimed, try again this often at most (the claim's retry hint may be sooner).
_IDLE_POLL_S = 0.25


def _capabilities(hello: worker_pb2.Hello) -> WorkerCapabilities:
    try:
        extra = orjson.loads(hello.capabilities_json) if hello.capabilities_json else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"capabilities_json is not JSON: {exc}", field="capabilities_json"
        ) from None
    if not isinstance(extra, dict):
        raise InvalidInput("capabilities_json must be a JSON object", field="capabilities_json")
    try:
        return WorkerCapabilities.model_validate(
            {**extra, "worker_id": hello.worker_id, "services": list(hello.services)}
        )
    except ValidationError as exc:
        raise invalid_from_validation(exc, root="hello") from None


def _assignment(claimed: ClaimedJob) -> worker_pb2.ConnectResponse:
    job = claimed.job
    message = worker_pb2.Assignment(
        job_id=job.id, token=claimed.token, service=job.service,
        payload_json=orjson.dumps(job.payload).decode(), attempt=job.attempts,
        timeout_s=job.timeout_s,
    )  # fmt: skip
    if job.workflow_id:
        message.workflow_id = job.workflow_id
    if job.traceparent:
        message.traceparent = job.traceparent
    return worker_pb2.ConnectResponse(assignment=message)


class _Session:
    """One connected worker: the jobs it holds and the answers waiting to go out."""

    def __init__(self, services: Services, caps: WorkerCapabilities) -> None:
        self.services = services
        self.caps = caps
        self.held: dict[str, ClaimedJob] = {}
        self.out: asyncio.Queue[worker_pb2.ConnectResponse | None] = asyncio.Queue()
        self._claiming: asyncio.Task[None] | None = None
        self._control: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        """Forward cancels of this worker's jobs (the Lua publishes them on its control channel)
        as ``CancelAssignment``; subscribed before the first claim, so none is missed."""
        pubsub = self.services.redis.pubsub()
        await pubsub.subscribe(self.services.queue.keys.control_channel(self.caps.worker_id))

        async def forward() -> None:
            try:
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    body = orjson.loads(message["data"])
                    job_id = str(body.get("job_id", ""))
                    if body.get("type") == "cancel" and self.held.pop(job_id, None) is not None:
                        cancel = worker_pb2.CancelAssignment(job_id=job_id)
                        self.out.put_nowait(worker_pb2.ConnectResponse(cancel=cancel))
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

        self._control = asyncio.create_task(forward())

    def _refused(self, job_id: str, reason: str) -> None:
        self.held.pop(job_id, None)
        self.out.put_nowait(
            worker_pb2.ConnectResponse(refused=worker_pb2.Refused(job_id=job_id, reason=reason))
        )

    async def _claim(self) -> None:
        queue = self.services.queue
        while True:
            result = await queue.claim(self.caps)
            if result.claimed is not None:
                self.held[result.claimed.id] = result.claimed
                self.out.put_nowait(_assignment(result.claimed))
                return
            wait = _IDLE_POLL_S if result.retry_in is None else min(result.retry_in, _IDLE_POLL_S)
            await asyncio.sleep(max(wait, 0.005))

    def _held(self, job_id: str, token: str) -> ClaimedJob | None:
        claimed = self.held.get(job_id)
        if claimed is None or claimed.token != token:
            self._refused(job_id, "not a job this stream holds under that token")
            return None
        return claimed

    async def handle(self, request: worker_pb2.ConnectRequest) -> None:
        queue = self.services.queue
        kind = request.WhichOneof("message")
        if kind == "ready":
            if self._claiming is None or self._claiming.done():
                self._claiming = asyncio.create_task(self._claim())
            return
        if kind not in ("heartbeat", "progress", "complete", "fail"):
            raise InvalidInput(f"unexpected message {kind!r}", field="message")
        body = getattr(request, kind)
        claimed = self._held(body.job_id, body.token)
        if claimed is None:
            return
        try:
            if kind == "heartbeat":
                await queue.heartbeat(claimed)
            elif kind == "progress":
                await queue.progress(claimed, body.progress, body.message)
            elif kind == "complete":
                result = orjson.loads(body.result_json) if body.result_json else None
                await queue.complete(claimed, result)
                self.held.pop(claimed.id, None)
            else:
                await queue.fail(claimed, body.error or "failed", retryable=body.retryable)
                self.held.pop(claimed.id, None)
        except StaleToken as exc:
            self._refused(claimed.id, exc.message)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"result_json is not JSON: {exc}", field="result_json") from None

    async def close(self) -> None:
        for task in (self._claiming, self._control):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.held:
            logger.info(
                "worker %s's stream ended holding %s: their leases will run out and the reaper "
                "will return them to pending", self.caps.worker_id, ", ".join(self.held),
            )  # fmt: skip


class WorkerService(worker_pb2_grpc.WorkerServiceServicer):  # type: ignore[misc]
    def __init__(self, services: Services) -> None:
        self.services = services

    async def Connect(
        self, requests: AsyncIterator[worker_pb2.ConnectRequest], context: Any
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        try:
            principal = await self.services.auth.authenticate(
                token_from(context.invocation_metadata())
            )
            principal.require_admin()
            first = await anext(aiter(requests), None)
            if first is None or first.WhichOneof("message") != "hello":
                raise InvalidInput("the first message must be hello", field="hello")
            caps = _capabilities(first.hello)
        except EmpError as exc:
            await abort(context, exc)
        session = _Session(self.services, caps)
        await session.listen()
        lease_s = self.services.queue.settings.lease_seconds
        yield worker_pb2.ConnectResponse(welcome=worker_pb2.Welcome(lease_seconds=lease_s))

        async def read() -> None:
            try:
                async for request in requests:
                    await session.handle(request)
            finally:
                session.out.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await session.out.get()) is not None:
                yield answer
            await reader  # raises what the reader raised (a bad message)
        except EmpError as exc:
            await abort(context, exc)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, EmpError):
                await reader
            await session.close()
