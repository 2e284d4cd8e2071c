"""The default transport: the worker talks to Redis itself.

Claims and reports are the Lua functions (``emp_core.queue.Queue``); leases are renewed by the
``LeaseKeeper`` thread; wake-ups and cancels arrive on one pub/sub connection (``Waker``); the
worker keeps its registry entry and LoRA advertisement alive, runs the shared reaper and the
output sweep, and holds the error patterns in memory (``PatternCache``).

Several queues (``--queue a --queue b``, issue 13): the claim takes them in turn (``Queues.claim``:
one call per queue at most, the starting queue rotating), one subscription hears every queue's
wake-ups, and the worker registers, advertises its LoRAs and reaps in each. A claimed job carries
its queue, and its lease, progress and outcome go there (one lease thread per queue). The
error patterns and the output index stay with the home queue (``EMP_QUEUE``), as for the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from pydantic import JsonValue
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from emp_core.blobs.retention import keep_until, sweep_periodically
from emp_core.errors import EmpError
from emp_core.loras.advert import withdraw_loras
from emp_core.loras.cache import LoraCache
from emp_core.patterns import PatternCache
from emp_core.queue.queue import ClaimedJob, ClaimResult, Queue
from emp_core.queue.queues import Queues
from emp_core.queue.wake import Waker, WakeSignal
from emp_core.redis.client import connect
from emp_core.registry.workers import WorkerRegistry
from emp_worker.background import reap_periodically, refresh_registration
from emp_worker.config import WorkerSettings
from emp_worker.lease import LeaseKeeper
from emp_worker.loras import advertise_periodically
from emp_worker.outputs import BlobWriter
from emp_worker.transport.base import ControlHandler, Failure, LostHandler

logger = logging.getLogger(__name__)


class RedisTransport:
    """One worker's connection to Redis: a client, a subscription and the lease thread."""

    name = "redis"

    def __init__(
        self, settings: WorkerSettings, *, redis: Redis | None = None, stopping: asyncio.Event
    ) -> None:
        self.settings = settings
        self.caps = settings.to_capabilities()
        self._own_client = redis is None
        self.redis = redis or connect(settings.redis_url)
        self.queue = Queue(self.redis, settings)  # the home queue: patterns, outputs
        self.queues = Queues(self.redis, settings, settings.queue_names_served)
        self.registries = [
            WorkerRegistry(self.redis, q.keys, ttl_s=settings.registry_ttl_seconds)
            for q in self.queues
        ]
        self._patterns = PatternCache(
            self.redis, self.queue.keys, refresh_s=settings.patterns_refresh_seconds
        )
        self._stopping = stopping
        # Set when Redis may have lost the registry (the wake-up subscription's connection went, or
        # the Function library is missing): each registry loop refreshes as soon as Redis answers.
        self._connection_lost = [asyncio.Event() for _ in self.registries]
        self._waker: Waker | None = None
        self._leases: dict[str, LeaseKeeper] = {}

    @property
    def where(self) -> str:
        return f"Redis at {self.settings.redis_url}"

    @property
    def patterns(self) -> PatternCache | None:
        return self._patterns

    @property
    def lease_renewals(self) -> int:
        return sum(keeper.renewals for keeper in self._leases.values())

    async def open(self, on_control: ControlHandler, on_lost: LostHandler) -> None:
        s = self.settings
        self._waker = Waker(
            self.redis, [q.keys for q in self.queues], self.caps.services, self.caps.worker_id,
            on_control=on_control, on_lost=self._registry_lost,
        )  # fmt: skip
        self._leases = {
            q.keys.queue: LeaseKeeper(
                s.redis_url,
                q.keys,
                s.lease_seconds,
                loop=asyncio.get_running_loop(),
                on_lost=on_lost,
                worker_id=self.caps.worker_id,
            )
            for q in self.queues
        }
        await self.queue.functions.load()
        await self._patterns.start()

    async def go_live(self, slots: int) -> None:
        assert self._waker is not None
        for registry in self.registries:
            await registry.register(self.caps, slots=slots)
        await self._waker.start()  # subscribed before the first claim: no wake-up is lost
        for keeper in self._leases.values():
            keeper.start()

    def background(
        self, loras: LoraCache, stores: Iterable[BlobWriter]
    ) -> list[Coroutine[Any, Any, None]]:
        s, worker_id = self.settings, self.caps.worker_id
        per_queue = [
            loop
            for registry, queue, lost in zip(
                self.registries, self.queues, self._connection_lost, strict=True
            )
            for loop in (
                refresh_registration(
                    registry, self.caps, slots=s.slots, every_s=s.registry_refresh_seconds,
                    stop_requested=self._stopping, connection_lost=lost,
                ),
                reap_periodically(queue, worker_id),
                advertise_periodically(
                    loras, self.redis, queue.keys, worker_id,
                    every_s=s.registry_refresh_seconds, ttl_s=s.registry_ttl_seconds,
                ),
            )
        ]  # fmt: skip
        return [
            *per_queue,
            # Outputs are recorded in the home queue (keep_outputs): swept there.
            *(
                sweep_periodically(self.redis, self.queue.keys, store, f"worker {worker_id}")
                for store in stores
            ),
        ]

    async def close(self, slots: int) -> None:
        await self._patterns.stop()
        for keeper in self._leases.values():
            keeper.stop()
        if self._waker is not None:
            await self._waker.close()
        with contextlib.suppress(RedisError, OSError, EmpError):
            # Out of the idle sets: no job's wake-up goes to a slot that will not claim.
            await self.queues.rest(self.caps, slots)
        for registry, queue in zip(self.registries, self.queues, strict=True):
            with contextlib.suppress(RedisError, OSError):
                await registry.deregister(self.caps.worker_id)
                await withdraw_loras(self.redis, queue.keys, self.caps.worker_id)
        if self._own_client:
            await self.redis.aclose()

    # --- wake-ups --------------------------------------------------------------------------------
    def signal(self, slot: int) -> WakeSignal:
        assert self._waker is not None
        return self._waker.signal(slot)

    def discard(self, signal: WakeSignal) -> None:
        if self._waker is not None:
            self._waker.discard(signal)

    def wake_all(self) -> None:
        if self._waker is not None:
            self._waker.wake_all()

    def _registry_lost(self) -> None:
        """The wake-up subscription's connection went: Redis restarted (without persistence it
        comes back empty), failed over or dropped us. Every restart drops that connection, while
        a slot's commands may reconnect unnoticed and another process (the API, a worker's
        reaper) may reload the library first, so this, not a slot's error, is the signal to
        register again as soon as Redis answers."""
        for lost in self._connection_lost:
            lost.set()

    async def recover(self, exc: BaseException) -> None:
        """After a slot met ``exc``: when the Function library is missing (Redis restarted
        without persistence), load it and register again rather than at the next refresh."""
        if not (isinstance(exc, ResponseError) and "function not found" in str(exc).lower()):
            return
        self._registry_lost()
        try:
            await self.queue.functions.load()
        except (EmpError, RedisError, OSError) as exc2:
            logger.warning(
                "worker %s could not load the emp library: %s", self.caps.worker_id, exc2
            )
        else:
            logger.warning(
                "worker %s loaded the emp library again: Redis had lost it", self.caps.worker_id
            )

    # --- jobs ------------------------------------------------------------------------------------
    async def claim(self, slot: int, first: str | None = None) -> ClaimResult:
        return await self.queues.claim(self.caps, slot=slot, first=first)

    def hold(self, claimed: ClaimedJob) -> None:
        self._leases[self.queues.of(claimed).keys.queue].hold(claimed)

    def drop(self, job_id: str, token: str) -> None:
        for keeper in self._leases.values():  # a job id is held by one of them at most
            keeper.drop(job_id, token)

    async def progress(
        self, claimed: ClaimedJob, pct: float, message: str, *, preview: str | None
    ) -> None:
        await self.queues.of(claimed).progress(claimed, pct, message, preview=preview)

    async def complete(
        self, claimed: ClaimedJob, result: JsonValue, *, next_for_slot: int | None
    ) -> ClaimResult | None:
        queue = self.queues.of(claimed)
        if next_for_slot is None:
            await queue.complete(claimed, result)
            return None
        if len(self.queues) > 1:
            # The next claim may be another queue's turn: two round trips, and fair.
            await queue.complete(claimed, result)
            return await self.queues.claim(self.caps, slot=next_for_slot)
        return await queue.complete(claimed, result, then_claim=self.caps, slot=next_for_slot)

    async def fail(self, claimed: ClaimedJob, failure: Failure) -> str:
        return await self.queues.of(claimed).fail(
            claimed, failure.message, retryable=failure.retryable, delay_s=failure.delay_s,
            classification=failure.classification,
        )  # fmt: skip

    async def release(self, claimed: ClaimedJob, reason: str) -> None:
        await self.queues.of(claimed).release(claimed, reason)

    async def keep_outputs(self, paths: list[str], *, keep: bool) -> None:
        if not paths:
            return
        due = int(time.time() * 1000) + self.settings.retention_seconds * 1000 if keep else 0
        await keep_until(self.redis, self.queue.keys, paths, due)
