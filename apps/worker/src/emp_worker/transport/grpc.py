"""The gRPC transport (``emp-worker --transport grpc --api HOST:PORT``): one
``emp.v1.WorkerService.Connect`` stream to the API, which runs the same Lua claims, leases and
fencing on the worker's behalf. For hosts that reach the API and nothing else.

Why grpcio's synchronous API in threads rather than ``grpc.aio``: lease renewals must not
depend on the event loop, which a connector may block (a synchronous GPU call). The stream's
requests are taken from a thread-safe queue by grpcio's own thread, its answers are read by a
thread of ours, and heartbeats are sent from a third, so a blocked loop keeps its leases exactly
as the Redis transport's ``LeaseKeeper`` does.

Every request that expects an answer carries a ``request_id`` and awaits the response whose
``reply_to`` is that id (``Done``, ``Refused``, ``Assignment`` or ``NoJob``); a ``Refused``
becomes ``StaleToken``, as from the Lua. What the server sends unasked: ``Wake`` (an idle slot's
job arrived; it names the job's queue, which the slot's next ``Ready`` asks to be tried first, as
the Redis transport's ``WakeSignal.queue`` does), ``CancelAssignment`` and the ``Refused`` of a
heartbeat (the lease is lost).

A stream that ends (the API restarted, the network went) ends every lease it held, like a dead
worker's: the jobs running are stopped as lost, and the next claim opens a new stream.

The LoRA cache's hashes go up as ``Loras`` whenever the set changes, and again at the start of
every new stream (the server withdraws them when a stream ends), so the claim's LoRA affinity
prefers this worker as it would a Redis worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Coroutine, Iterable
from typing import Any

import grpc
import orjson
from pydantic import JsonValue

from emp.v1 import worker_pb2
from emp_core.errors import EmpError, StaleToken
from emp_core.loras.cache import ADVERTISE_LIMIT, LoraCache
from emp_core.patterns import PatternCache
from emp_core.queue.queue import ClaimedJob, ClaimResult
from emp_core.queue.wake import WakeSignal
from emp_rpc.assignments import claimed_from_proto
from emp_rpc.metadata import bearer
from emp_worker.config import WorkerSettings
from emp_worker.lease import HeldLeases
from emp_worker.outputs import BlobWriter
from emp_worker.transport.base import ControlHandler, Failure, LostHandler, TransportError
from emp_worker.transport.grpc_stream import Request, Response, Stream, failure, reject, resolve

logger = logging.getLogger(__name__)

# How long ``close`` waits for the server to finish the stream after the last message.
_CLOSE_WAIT_S = 10.0


class GrpcTransport:
    """One worker's stream to the API's ``WorkerService``."""

    name = "grpc"

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.caps = settings.to_capabilities()
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        self.metadata = bearer(token)
        self.renewals = 0
        self.lease_seconds = settings.lease_seconds
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # the stream and the answers awaited on it
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._held = HeldLeases()
        self._signals: dict[int, WakeSignal] = {}
        self._stream: Stream | None = None
        self._channel: grpc.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None
        self._on_control: ControlHandler = lambda message: None
        self._on_lost: LostHandler = lambda job_id, token, why: None
        self._loras: list[str] | None = None  # the last LoRA advertisement, for new streams

    @property
    def where(self) -> str:
        return f"the API's gRPC server at {self.settings.api_address}"

    @property
    def patterns(self) -> PatternCache | None:
        # The error patterns live in Redis, out of reach: failures go with the connector's own
        # verdict (Retry/Abort) or as retryable with the queue's backoff.
        return None

    @property
    def lease_renewals(self) -> int:
        return self.renewals

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the gRPC transport is not open")
        return self._loop

    # --- connecting ------------------------------------------------------------------------------
    def _open_channel(self) -> grpc.Channel:
        s = self.settings
        address = s.api_address or ""
        options = [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000)]
        if not s.api_tls:
            return grpc.insecure_channel(address, options=options)
        roots = None
        if s.api_ca_file is not None:
            try:
                roots = s.api_ca_file.read_bytes()
            except OSError as exc:
                raise EmpError(f"api_ca_file {s.api_ca_file} cannot be read: {exc}") from None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.secure_channel(address, credentials, options=options)

    async def open(self, on_control: ControlHandler, on_lost: LostHandler) -> None:
        self._loop = asyncio.get_running_loop()
        self._connecting = asyncio.Lock()
        self._on_control, self._on_lost = on_control, on_lost
        channel = self._channel = self._open_channel()
        timeout = self.settings.api_connect_timeout_seconds
        try:
            await asyncio.to_thread(grpc.channel_ready_future(channel).result, timeout)
        except grpc.FutureTimeoutError:
            raise TransportError(
                f"cannot reach {self.where} (no connection within {timeout:g} s)"
            ) from None
        await self._connect()

    async def _connect(self) -> Stream:
        """Open a stream and introduce the worker; the ``Welcome`` says the lease length."""
        assert self._channel is not None
        stream = Stream(self, self._channel)
        hello = worker_pb2.Hello(
            worker_id=self.caps.worker_id,
            services=list(self.caps.services),
            capabilities_json=self.caps.model_dump_json(exclude={"worker_id", "services"}),
            slots=self.settings.slots,
        )
        stream.send(Request(hello=hello))
        try:
            welcome = await asyncio.wait_for(
                stream.welcome, self.settings.api_connect_timeout_seconds
            )
        except TimeoutError:
            stream.call.cancel()
            raise TransportError(f"{self.where} did not answer the worker's hello") from None
        except BaseException:
            stream.call.cancel()
            raise
        self.lease_seconds = welcome.lease_seconds or self.lease_seconds
        if self._loras is not None:
            # Unanswered (no request_id): it goes in order after the hello, before any claim.
            stream.send(Request(loras=worker_pb2.Loras(sha256=self._loras)))
        with self._lock:
            self._stream = stream
        return stream

    async def _live(self) -> Stream:
        """The open stream, or a new one when the last has ended."""
        stream = self._stream
        if stream is not None and not stream.closed:
            return stream
        assert self._connecting is not None
        async with self._connecting:
            stream = self._stream
            if stream is not None and not stream.closed:
                return stream
            logger.info("worker %s connects to %s again", self.caps.worker_id, self.where)
            return await self._connect()

    async def go_live(self, slots: int) -> None:
        self._heart = threading.Thread(
            target=self._beat, name=f"emp-lease-{self.caps.worker_id}", daemon=True
        )
        self._heart.start()

    def background(
        self, loras: LoraCache, stores: Iterable[BlobWriter]
    ) -> list[Coroutine[Any, Any, None]]:
        # The registry and the reaper are Redis's; the server holds the stream's leases and the
        # API's own reaper returns a dropped stream's jobs. The LoRAs go up the stream.
        return [self._advertise(loras)]

    async def _advertise(self, cache: LoraCache) -> None:
        """Send the hashes the cache holds (most recently used first, bounded) whenever they
        change; the cache's ``open`` marks it changed, so the first goes at start."""
        while True:
            await cache.changed.wait()
            cache.changed.clear()
            hashes = cache.held(ADVERTISE_LIMIT)
            if hashes == self._loras:
                continue
            self._loras = hashes  # first: a stream opened from now on is given these
            try:
                self._outcome(await self._ask(Request(loras=worker_pb2.Loras(sha256=hashes))))
            except (TransportError, EmpError) as exc:
                # A new stream sends them anyway; a refusal (a bug) is the server's to explain.
                logger.warning(
                    "worker %s could not advertise its LoRAs to %s: %s",
                    self.caps.worker_id, self.where, exc,
                )  # fmt: skip

    async def close(self, slots: int) -> None:
        self._stop.set()
        if self._heart is not None:
            await asyncio.to_thread(self._heart.join, 5)
        stream = self._stream
        if stream is not None and not stream.closed:
            # A half-close, not a cancel: the server applies what was sent, leaves the idle
            # sets and ends the stream.
            stream.finish()
            await asyncio.to_thread(stream.reader.join, _CLOSE_WAIT_S)
            stream.call.cancel()
        if self._channel is not None:
            self._channel.close()

    # --- the reader thread's side ----------------------------------------------------------------
    def _call_soon(self, callback: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is gone
            self.loop.call_soon_threadsafe(callback, *args)

    def _received(self, stream: Stream, response: Response) -> None:
        kind = response.WhichOneof("message")
        if kind == "welcome":
            self._call_soon(resolve, stream.welcome, response.welcome)
            return
        if response.reply_to:
            with self._lock:
                future = self._pending.pop(response.reply_to, None)
            if future is not None:
                self._call_soon(resolve, future, response)
                return
        if kind == "done" and response.done.outcome == "renewed":
            self.renewals += 1
        elif kind == "refused":
            self._lost(response.refused.job_id, response.refused.reason)
        elif kind == "cancel":
            message = {"type": "cancel", "job_id": response.cancel.job_id, "reason": "cancelled"}
            self._call_soon(self._on_control, message)
        elif kind == "wake":
            self._call_soon(self._wake, response.wake.slot, response.wake.queue or None)

    def _lost(self, job_id: str, why: str) -> None:
        token = self._held.take(job_id)
        if token is not None:
            self._call_soon(self._on_lost, job_id, token, why)

    def _ended(self, stream: Stream, error: grpc.RpcError | None) -> None:
        """The stream is over: fail what waits on it and give up the leases it held."""
        with self._lock:
            stream.closed = True
            pending, self._pending = self._pending, {}
        held = self._held.take_all()
        problem = failure(error, self.where)
        if not stream.welcome.done():
            self._call_soon(reject, stream.welcome, problem)
        for future in pending.values():
            self._call_soon(reject, future, problem)
        if self._stop.is_set():
            return
        logger.warning("worker %s: %s", self.caps.worker_id, problem)
        for job_id, token in held.items():
            self._call_soon(self._on_lost, job_id, token, "the stream to the API ended")
        self._call_soon(self.wake_all)  # idle slots claim again, over a new stream

    def _beat(self) -> None:
        """Renew every held lease every third of the lease (answers counted by the reader)."""
        while not self._stop.wait(self.lease_seconds / 3):
            stream = self._stream
            if stream is None or stream.closed:
                continue
            for job_id, token in self._held.held().items():
                beat = worker_pb2.Heartbeat(job_id=job_id, token=token)
                stream.send(Request(heartbeat=beat, request_id=next(self._ids)))

    # --- wake-ups --------------------------------------------------------------------------------
    def signal(self, slot: int) -> WakeSignal:
        signal = self._signals[slot] = WakeSignal()
        return signal

    def discard(self, signal: WakeSignal) -> None:
        for slot in [s for s, v in self._signals.items() if v is signal]:
            del self._signals[slot]

    def wake_all(self) -> None:
        for signal in self._signals.values():
            signal.set()

    def _wake(self, slot: int, queue: str | None) -> None:
        signal = self._signals.get(slot)
        if signal is None:
            self.wake_all()  # a slot we do not know (or -1): let every slot look
        else:
            # The queue whose job rang: the slot's next claim asks the server to try it first.
            signal.set(queue)

    async def recover(self, exc: BaseException) -> None:
        """Nothing to repair here: the next claim opens a new stream."""

    # --- requests --------------------------------------------------------------------------------
    async def _ask(self, message: Request) -> Response:
        """Send a message and wait for its answer."""
        stream = await self._live()
        message.request_id = request_id = next(self._ids)
        future: asyncio.Future[Response] = self.loop.create_future()
        with self._lock:
            if stream.closed:
                raise TransportError(f"the stream to {self.where} has ended")
            self._pending[request_id] = future
            stream.send(message)
        return await future

    def _claim_result(self, response: Response) -> ClaimResult:
        kind = response.WhichOneof("message")
        if kind == "assignment":
            return ClaimResult(claimed_from_proto(response.assignment))
        if kind == "no_job":
            none = response.no_job
            return ClaimResult(None, none.retry_in if none.HasField("retry_in") else None)
        raise TransportError(f"{self.where} answered a claim with {kind!r}")

    @staticmethod
    def _outcome(response: Response) -> str:
        kind = response.WhichOneof("message")
        if kind == "refused":
            raise StaleToken(response.refused.reason or "no longer this worker's job")
        if kind != "done":
            raise TransportError(f"the API answered a report with {kind!r}")
        return response.done.outcome

    async def claim(self, slot: int, first: str | None = None) -> ClaimResult:
        # The API chooses the queues of a gRPC worker; ``first`` (the queue a Wake named) only
        # says where to start.
        ready = worker_pb2.Ready(slot=slot, first_queue=first or "")
        return self._claim_result(await self._ask(Request(ready=ready)))

    def hold(self, claimed: ClaimedJob) -> None:
        self._held.hold(claimed)

    def drop(self, job_id: str, token: str) -> None:
        self._held.drop(job_id, token)

    async def progress(
        self, claimed: ClaimedJob, pct: float, message: str, *, preview: str | None
    ) -> None:
        body = worker_pb2.Progress(
            job_id=claimed.id, token=claimed.token, progress=pct, message=message
        )
        if preview is not None:
            body.preview = preview
        self._outcome(await self._ask(Request(progress=body)))

    async def complete(
        self, claimed: ClaimedJob, result: JsonValue, *, next_for_slot: int | None
    ) -> ClaimResult | None:
        body = worker_pb2.Complete(
            job_id=claimed.id, token=claimed.token, result_json=orjson.dumps(result).decode(),
            claim_next=next_for_slot is not None, slot=next_for_slot or 0,
        )  # fmt: skip
        response = await self._ask(Request(complete=body))
        if response.WhichOneof("message") in ("assignment", "no_job"):
            return self._claim_result(response)
        self._outcome(response)
        return None

    async def fail(self, claimed: ClaimedJob, failure: Failure) -> str:
        # No classification travels: the error patterns are Redis's; the server classifies.
        body = worker_pb2.Fail(
            job_id=claimed.id, token=claimed.token, error=failure.message[:8000],
            retryable=failure.retryable, classify=not failure.decided,
        )  # fmt: skip
        if failure.delay_s is not None:
            body.delay_s = failure.delay_s
        return self._outcome(await self._ask(Request(fail=body)))

    async def release(self, claimed: ClaimedJob, reason: str) -> None:
        body = worker_pb2.Release(job_id=claimed.id, token=claimed.token, reason=reason)
        self._outcome(await self._ask(Request(release=body)))

    async def keep_outputs(self, paths: list[str], *, keep: bool) -> None:
        """Nothing to send: the server records the outputs from the result it receives (and
        makes them due at once when it refuses that result), so a worker cannot schedule any
        other blob for deletion."""
