"""The worker's transport: how the loop above it reaches the queue.

The worker's slots, lease handling, reporting and cancellation (``worker.py``, ``reporting.py``)
call a ``Transport`` and nothing else, so the same loop runs over either implementation:

- ``RedisTransport`` (``transport/redis.py``, the default): the worker talks to Redis itself:
  the Lua claims, a lease thread, pub/sub wake-ups, the registry, the shared reaper;
- ``GrpcTransport`` (``transport/grpc.py``, ``--transport grpc``, the ``emp-worker[grpc]`` extra):
  one ``emp.v1.WorkerService.Connect`` stream to the API, which runs the same Lua on the worker's
  behalf, for hosts that reach only HTTPS.

Both keep the queue's rules: a claim returns a fencing token that every report carries (a stale
one raises ``StaleToken``), leases are renewed from a thread the connector cannot starve, an idle
slot waits on its ``WakeSignal`` (no polling), and a cancel of a running job reaches
``on_control`` as ``{"type": "cancel", "job_id": ..., "reason": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import JsonValue

from emp_core.loras.cache import LoraCache
from emp_core.patterns import PatternCache
from emp_core.patterns.rules import Classification
from emp_core.queue.queue import ClaimedJob, ClaimResult
from emp_core.queue.wake import WakeSignal
from emp_worker.outputs import BlobWriter

# Control messages (cancels) in the event loop; lost leases as (job id, fencing token, why).
ControlHandler = Callable[[dict[str, Any]], None]
LostHandler = Callable[[str, str, str], None]


class TransportError(ConnectionError):
    """The queue cannot be reached (Redis or the API's gRPC server): the slot waits and tries
    again, as it does after a Redis error. A ``ConnectionError``, so an ``OSError`` handler sees
    it."""


@dataclass(frozen=True, slots=True)
class Failure:
    """How a job failed, as the worker decided: the message stored with the job, whether to
    retry and after how long (None: the queue's backoff), what the error patterns said."""

    message: str
    retryable: bool
    delay_s: float | None = None
    classification: Classification | None = None
    # False: nothing here decided (no error patterns, the default classifier), so a transport
    # whose other side holds the patterns may classify it there (the gRPC server does).
    decided: bool = True


class Transport(Protocol):
    """What the worker loop needs of the queue; one per worker process."""

    @property
    def name(self) -> str:
        """``redis`` or ``grpc``, for logs."""

    @property
    def where(self) -> str:
        """The address it talks to, for errors people read (no credentials)."""

    @property
    def patterns(self) -> PatternCache | None:
        """The error patterns held in memory, where this transport can keep them fresh."""

    @property
    def lease_renewals(self) -> int:
        """Lease renewals made so far."""

    async def open(self, on_control: ControlHandler, on_lost: LostHandler) -> None:
        """Connect and check the queue is usable (library loaded, or the stream accepted); raise
        ``TransportError`` or ``EmpError`` with a message for people when not."""

    async def go_live(self, slots: int) -> None:
        """Register, subscribe to wake-ups and start renewing leases: claims may begin."""

    def background(
        self, loras: LoraCache, stores: Iterable[BlobWriter]
    ) -> list[Coroutine[Any, Any, None]]:
        """The loops this transport needs beside the slots (registry, reaper, ...)."""

    async def close(self, slots: int) -> None:
        """Leave the idle sets, deregister, disconnect; never raises for a lost connection."""

    # --- wake-ups --------------------------------------------------------------------------------
    def signal(self, slot: int) -> WakeSignal: ...

    def discard(self, signal: WakeSignal) -> None: ...

    def wake_all(self) -> None: ...

    async def recover(self, exc: BaseException) -> None:
        """After a slot met ``exc`` (a lost connection): repair what can be repaired."""

    # --- jobs ------------------------------------------------------------------------------------
    async def claim(self, slot: int, first: str | None = None) -> ClaimResult:
        """Claim the best job this worker can run; an empty claim leaves the slot idle (woken by
        its signal). ``first``: the queue whose job woke the slot (``WakeSignal.queue``)."""

    def hold(self, claimed: ClaimedJob) -> None:
        """Renew this claim's lease until ``drop``."""

    def drop(self, job_id: str, token: str) -> None: ...

    async def progress(
        self, claimed: ClaimedJob, pct: float, message: str, *, preview: str | None
    ) -> None: ...

    async def complete(
        self, claimed: ClaimedJob, result: JsonValue, *, next_for_slot: int | None
    ) -> ClaimResult | None:
        """Store the result; with ``next_for_slot``, claim that slot's next job in the same round
        trip and return it."""

    async def fail(self, claimed: ClaimedJob, failure: Failure) -> str:
        """``retrying`` or ``failed``."""

    async def release(self, claimed: ClaimedJob, reason: str) -> None: ...

    async def keep_outputs(self, paths: list[str], *, keep: bool) -> None:
        """Record a job's output files for deletion after the retention (``keep``) or at once."""
