"""``emp.v1.WorkerService.Connect``: a worker that cannot reach Redis works through one stream.

The server runs the same Lua claims, leases and fencing on the worker's behalf (``Queue``): a
``Ready`` claims for one of the worker's slots with its capabilities and is answered with an
``Assignment`` or ``NoJob``; a slot that found nothing is in the idle set like a Redis worker's,
and the Lua's wake-up for it (on the worker's control channel) goes down the stream as ``Wake``,
so an idle gRPC worker is not polled for. Each report carries the job's fencing token, and a
stale one is answered with ``Refused``; a cancelled job's worker is told with
``CancelAssignment``. A message with a ``request_id`` gets exactly one answer carrying it as
``reply_to`` (``Done``, ``Refused``, or for a claim ``Assignment``/``NoJob``): the worker's
transport awaits it as it would await a Redis call.
Leases are renewed only by the worker's ``Heartbeat`` messages, so a stream that drops (or a
worker that stops sending) loses its lease exactly like a dead Redis worker: the reaper returns
the job to pending and it runs elsewhere.

The session of one stream (``worker_session.py``) holds what is described here; this module
authenticates the stream and pumps its messages.

The worker's ``Loras`` (the hashes its LoRA cache holds) are written to its set in Redis
(``Keys.worker_loras``, what the claim's affinity reads) exactly as a Redis worker writes its own,
kept alive while the stream lasts and withdrawn when it ends.

Several queues (``EMP_QUEUE_ROUTES``, issue 13): the worker names no queue; the server serves it
from the queues its services are routed to (``Queues.serving``), claiming from them in turn as a
Redis worker over ``--queue a --queue b`` does (one call per queue at most, the starting queue
rotating per stream). A ``Wake`` names the queue whose control channel rang, and the worker's
next ``Ready`` names it back as ``first_queue``: that claim starts there without spending the
turn, as a Redis worker's woken slot does (the job woke this slot alone). A ``first_queue`` the
worker is not served from is ignored with a warning. Each report goes to its job's queue
(``Queues.of``); the worker is registered, advertises its LoRAs, rests and hears its control
channel in each of them (on a Redis Cluster, each on its queue's node). The error patterns and
the outputs' index stay with the API's home queue. A worker whose services all go to one queue
costs exactly the calls it did before routes existed.

Workers are operators' processes: the stream needs an admin token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from emp.v1 import worker_pb2, worker_pb2_grpc
from emp_api.rpc.errors import abort
from emp_api.rpc.hello import capabilities
from emp_api.rpc.worker_session import Session
from emp_api.state import Services
from emp_core.errors import EmpError, InvalidInput
from emp_core.patterns import PatternCache
from emp_rpc.metadata import token_from


class WorkerService(worker_pb2_grpc.WorkerServiceServicer):  # type: ignore[misc]
    def __init__(self, services: Services) -> None:
        self.services = services
        # One copy of the error patterns per API process, for the failures gRPC workers leave
        # undecided; started by the first stream (swapped on announcements, re-read every 5 min).
        self.patterns = PatternCache(services.redis, services.queue.keys)
        self._patterns_started: asyncio.Task[None] | None = None

    async def _started_patterns(self) -> PatternCache:
        task = self._patterns_started
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            # The first stream starts it; one whose start failed (Redis away) is tried again.
            task = self._patterns_started = asyncio.create_task(self.patterns.start())
        await asyncio.shield(task)
        return self.patterns

    async def close(self) -> None:
        """Stop the error patterns' listener (the server is stopping)."""
        await self.patterns.stop()

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
            caps = capabilities(first.hello)
        except EmpError as exc:
            await abort(context, exc)
        session = Session(self.services, caps, await self._started_patterns())
        await session.register(first.hello.slots)
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
