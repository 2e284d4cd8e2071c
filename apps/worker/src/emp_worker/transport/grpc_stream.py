"""One ``emp.v1.WorkerService.Connect`` call of the gRPC transport (``grpc.py``): the outbox grpcio
reads the worker's requests from, the thread that reads the server's answers, and what a stream's
end means. Kept apart from the transport, which owns the requests' meaning (claims, reports,
leases); this module owns only the stream's threads."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc

from emp.v1 import worker_pb2, worker_pb2_grpc
from emp_core.errors import EmpError
from emp_worker.transport.base import TransportError

if TYPE_CHECKING:
    from emp_worker.transport.grpc import GrpcTransport

logger = logging.getLogger(__name__)

Response = worker_pb2.ConnectResponse
Request = worker_pb2.ConnectRequest


class Stream:
    """One ``Connect`` call: the outbox grpcio reads requests from, and our reader thread."""

    def __init__(self, transport: GrpcTransport, channel: grpc.Channel) -> None:
        self.transport = transport
        self.outbox: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self.closed = False  # under the transport's lock
        self.welcome: asyncio.Future[worker_pb2.Welcome] = transport.loop.create_future()
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        self.call = stub.Connect(self._requests(), metadata=transport.metadata)
        self.reader = threading.Thread(
            target=self._read, name=f"emp-grpc-{transport.caps.worker_id}", daemon=True
        )
        self.reader.start()

    def _requests(self) -> Iterator[Request]:
        while (message := self.outbox.get()) is not None:
            yield message

    def send(self, message: Request) -> None:
        self.outbox.put(message)

    def finish(self) -> None:
        """No more requests: the server answers what it has and ends the stream."""
        self.outbox.put(None)

    def _read(self) -> None:
        error: grpc.RpcError | None = None
        try:
            for response in self.call:
                self.transport._received(self, response)
        except grpc.RpcError as exc:
            error = exc
        except Exception:  # a bug in dispatch must still end the stream cleanly
            logger.exception("the gRPC stream's reader failed")
        finally:
            self.transport._ended(self, error)


def resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def reject(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def failure(error: grpc.RpcError | None, where: str) -> Exception:
    """What a stream's end means for people: refused credentials stop the worker (EmpError),
    anything else is a lost connection (TransportError: try again)."""
    if error is None:
        return TransportError(f"{where} ended the stream")
    code, details = error.code(), error.details() or ""
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return EmpError(f"{where} refused the token in EMP_API_TOKEN: {details}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return EmpError(f"{where} needs an admin token for a worker: {details}")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return EmpError(f"{where} refused the worker: {details}")
    if code is grpc.StatusCode.CANCELLED:
        return TransportError(f"the stream to {where} was cancelled")
    return TransportError(f"lost {where} ({code.name}: {details})")
