"""A gRPC worker's stream for tests of ``WorkerService.Connect``: send messages, read answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from emp.v1 import worker_pb2
from emp_rpc.metadata import bearer


class Stream:
    """One worker's stream: send messages, read answers."""

    def __init__(self, stub: Any, token: str) -> None:
        self.outbox: asyncio.Queue[worker_pb2.ConnectRequest | None] = asyncio.Queue()
        self.call = stub.Connect(self._requests(), metadata=bearer(token))

    async def _requests(self) -> AsyncIterator[worker_pb2.ConnectRequest]:
        while (message := await self.outbox.get()) is not None:
            yield message

    def send(self, **kind: Any) -> None:
        self.outbox.put_nowait(worker_pb2.ConnectRequest(**kind))

    async def read(self) -> worker_pb2.ConnectResponse:
        answer = await asyncio.wait_for(self.call.read(), 10)
        assert answer is not grpc.aio.EOF
        return answer


def hello(
    worker_id: str = "grpc-w1", services: tuple[str, ...] = ("simulation",)
) -> worker_pb2.Hello:
    return worker_pb2.Hello(worker_id=worker_id, services=list(services))


async def ended(stream: Stream) -> None:
    """Close the worker's side and read until the server has ended the stream."""
    stream.outbox.put_nowait(None)
    with contextlib.suppress(grpc.aio.AioRpcError):
        while await asyncio.wait_for(stream.call.read(), 10) is not grpc.aio.EOF:
            pass
