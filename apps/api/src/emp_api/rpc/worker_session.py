"""One connected worker of ``WorkerService.Connect`` (``workers.py``, which says what the stream
does): the jobs it holds, its answers waiting to go out, its registry entries, LoRA advertisement
and control-channel subscription in each queue it is served from, and the handling of each of its
messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from emp.v1 import worker_pb2
from emp_api.rpc.hello import lora_hashes
from emp_api.state import Services
from emp_core.blobs.retention import keep_until, output_paths
from emp_core.errors import EmpError, InvalidInput, StaleToken
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.loras.advert import advertise_loras, withdraw_loras
from emp_core.patterns import PatternCache
from emp_core.queue.queue import ClaimedJob, ClaimResult
from emp_core.redis import text
from emp_core.redis.subscription import ShardSubscription
from emp_core.registry.workers import WorkerRegistry
from emp_rpc.assignments import assignment_to_proto

logger = logging.getLogger(__name__)

# A worker's slots are numbered from 0; more than this is not a worker (settings allow 64).
_MAX_SLOTS = 64
# The registry entry of a connected worker is refreshed this often (its TTL is three times it);
# so is its LoRA advertisement, which therefore outlives a dead API process by 15 s at most.
_REGISTRY_REFRESH_S = 5.0
_LORAS_TTL_MS = int(3 * _REGISTRY_REFRESH_S * 1000)
# After the control channel's connection is lost: the pause before reading (reconnecting) again.
_RESUBSCRIBE_S = 0.5
# While a refresh fails (Redis restarting): how often it is tried again.
_REFRESH_RETRY_S = 1.0


class Session:
    """One connected worker: the jobs it holds and the answers waiting to go out."""

    def __init__(
        self, services: Services, caps: WorkerCapabilities, patterns: PatternCache
    ) -> None:
        self.services = services
        self.caps = caps
        self.patterns = patterns
        # The queues this worker's services are routed to: claims rotate over them, a job's
        # reports go to its own (``of``). A registry per queue; the web's listing dedups them.
        self.queues = services.queues.serving(caps.services)
        self.registries = [
            WorkerRegistry(services.redis, q.keys, ttl_s=3 * _REGISTRY_REFRESH_S)
            for q in self.queues
        ]
        self.held: dict[str, ClaimedJob] = {}
        self.out: asyncio.Queue[worker_pb2.ConnectResponse | None] = asyncio.Queue()
        self.slots = 0  # 1 + the highest slot that claimed: what leaves the idle sets at the end
        self.loras: list[str] | None = None  # the last advertisement; None: none was made
        # Each served queue's control channel -> that queue: a wake-up names the queue that rang.
        self._queue_of = {q.keys.control_channel(caps.worker_id): q.keys.queue for q in self.queues}
        self._control: asyncio.Task[None] | None = None
        self._registration: asyncio.Task[None] | None = None
        # Set when the control channel's connection is lost: Redis restarted (without
        # persistence the registry is gone), failed over or dropped us; refresh at once.
        self._registry_lost = asyncio.Event()

    async def register(self, slots: int) -> None:
        """List the worker in the registry while its stream lasts, as a Redis worker lists
        itself (the studio's workers, a pending job's explanation); the hostname and pid are
        this API process's, which holds the stream."""
        slots = max(1, min(slots, _MAX_SLOTS))
        for registry in self.registries:
            await registry.register(self.caps, slots=slots)

        async def refresh() -> None:
            wait_s, failing = _REGISTRY_REFRESH_S, False
            while True:
                # The next refresh, or at once when the control channel lost Redis (as a Redis
                # worker does: registered again as soon as a restarted Redis answers).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._registry_lost.wait()
                self._registry_lost.clear()
                try:
                    for registry in self.registries:
                        await registry.refresh(self.caps, slots=slots)
                    if self.loras:
                        # Written whole, not only its TTL renewed: a previous stream of this
                        # worker that ended late may have withdrawn it meanwhile.
                        await self._advertise(self.loras)
                    wait_s, failing = _REGISTRY_REFRESH_S, False
                except (RedisError, OSError) as exc:
                    if not failing:  # once per outage, not once per retry
                        logger.warning(
                            "worker %s's registry entry was not refreshed: %s",
                            self.caps.worker_id, exc,
                        )  # fmt: skip
                    wait_s, failing = min(_REGISTRY_REFRESH_S, _REFRESH_RETRY_S), True

        self._registration = asyncio.create_task(refresh())

    async def listen(self) -> None:
        """Forward cancels of this worker's jobs (the Lua publishes them on its control channel
        in the job's queue) as ``CancelAssignment``, and wake-ups as ``Wake``; subscribed to the
        channel of every queue served (on a cluster, each on its queue's shard) before the first
        claim, so none is missed."""
        subscription = ShardSubscription(self.services.redis, list(self._queue_of))
        await subscription.open()

        async def forward() -> None:
            try:
                while True:
                    try:
                        async for message in subscription.listen():
                            self._forward(message)
                    except (RedisError, OSError) as exc:
                        # Reading again reconnects and subscribes again (its confirmation then
                        # wakes every slot, above); until then a cancel waits for the job's
                        # next heartbeat, which the Lua refuses.
                        logger.warning(
                            "worker %s's control channel was lost (%s); subscribing again",
                            self.caps.worker_id, exc,
                        )  # fmt: skip
                        self._registry_lost.set()
                        await asyncio.sleep(_RESUBSCRIBE_S)
            finally:
                await subscription.aclose()

        self._control = asyncio.create_task(forward())

    def _forward(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ssubscribe":
            # Subscribed again after a lost connection: a wake-up may have been missed meanwhile,
            # so every idle slot looks once (-1: any slot).
            self.out.put_nowait(worker_pb2.ConnectResponse(wake=worker_pb2.Wake(slot=-1)))
            return
        if kind != "smessage":
            return
        body = orjson.loads(message["data"])
        job_id = str(body.get("job_id", ""))
        if body.get("type") == "cancel" and self.held.pop(job_id, None) is not None:
            cancel = worker_pb2.CancelAssignment(job_id=job_id)
            self.out.put_nowait(worker_pb2.ConnectResponse(cancel=cancel))
        elif body.get("type") == "wake":
            # The Lua woke one idle slot of this worker (-1: any slot may look) for a job of the
            # queue whose channel this is: the worker's next Ready names it as first_queue.
            slot = body.get("slot")
            wake = worker_pb2.Wake(
                slot=slot if isinstance(slot, int) else -1,
                queue=self._queue_of.get(text(message["channel"]), ""),
            )
            self.out.put_nowait(worker_pb2.ConnectResponse(wake=wake))

    def _answer(self, reply_to: int, **kind: Any) -> None:
        self.out.put_nowait(worker_pb2.ConnectResponse(reply_to=reply_to, **kind))

    def _refused(self, reply_to: int, job_id: str, reason: str) -> None:
        self.held.pop(job_id, None)
        self._answer(reply_to, refused=worker_pb2.Refused(job_id=job_id, reason=reason))

    def _claimed(self, reply_to: int, slot: int, result: ClaimResult) -> None:
        """Answer a claim: the job (now held by this stream), or when to look again."""
        if result.claimed is not None:
            self.held[result.claimed.id] = result.claimed
            self._answer(reply_to, assignment=assignment_to_proto(result.claimed, slot))
            return
        none = worker_pb2.NoJob(slot=slot)
        if result.retry_in is not None:
            none.retry_in = result.retry_in
        self._answer(reply_to, no_job=none)

    def _slot(self, slot: int) -> int:
        if not 0 <= slot < _MAX_SLOTS:
            raise InvalidInput(f"slot must be 0-{_MAX_SLOTS - 1}, got {slot}", field="slot")
        self.slots = max(self.slots, slot + 1)
        return slot

    def _first(self, name: str) -> str | None:
        """The queue a Ready asks to be tried first, when this worker is served from it. Only a
        preference: a name it is not served from (a hint from a stream to an API process with
        other routes, or a bad client) is ignored with a warning, and the claim goes in turn."""
        if not name:
            return None
        if name in self.queues.names:
            return name
        logger.warning(
            "worker %s asked to claim first in queue %r, which it is not served from (%s); "
            "claiming in turn", self.caps.worker_id, name[:100], ", ".join(self.queues.names),
        )  # fmt: skip
        return None

    async def _advertise(self, hashes: list[str]) -> None:
        # In each queue served: a queue's claim reads the affinity from its own keys.
        for queue in self.queues:
            await advertise_loras(
                queue.redis, queue.keys, self.caps.worker_id, hashes, ttl_ms=_LORAS_TTL_MS
            )

    async def handle(self, request: worker_pb2.ConnectRequest) -> None:
        kind = request.WhichOneof("message")
        rid = request.request_id
        if kind == "ready":
            slot = self._slot(request.ready.slot)
            first = self._first(request.ready.first_queue)
            self._claimed(rid, slot, await self.queues.claim(self.caps, slot=slot, first=first))
            return
        if kind == "loras":
            hashes = lora_hashes(request.loras)  # checked whole before anything is written
            await self._advertise(hashes)
            self.loras = hashes
            if rid:
                self._answer(rid, done=worker_pb2.Done(outcome="advertised"))
            return
        if kind not in ("heartbeat", "progress", "complete", "fail", "release"):
            raise InvalidInput(f"unexpected message {kind!r}", field="message")
        body = getattr(request, kind)
        claimed = self.held.get(body.job_id)
        if claimed is None or claimed.token != body.token:
            self._refused(rid, body.job_id, "not a job this stream holds under that token")
            return
        try:
            outcome = await self._apply(kind, body, claimed, rid)
        except StaleToken as exc:
            self._refused(rid, claimed.id, exc.message)
            return
        if outcome is not None and rid:
            self._answer(rid, done=worker_pb2.Done(job_id=claimed.id, outcome=outcome))

    async def _apply(self, kind: str, body: Any, claimed: ClaimedJob, rid: int) -> str | None:
        """Apply one report under its token, in the job's queue; the outcome to answer with
        (None: answered)."""
        queue = self.queues.of(claimed)
        if kind == "heartbeat":
            await queue.heartbeat(claimed)
            return "renewed"
        if kind == "progress":
            preview = body.preview if body.HasField("preview") else None
            await queue.progress(claimed, body.progress, body.message, preview=preview)
            return "progress"
        if kind == "release":
            await queue.release(claimed, body.reason or "released")
            self.held.pop(claimed.id, None)
            return "released"
        if kind == "fail":
            return await self._fail(body, claimed)
        try:
            result = orjson.loads(body.result_json) if body.result_json else None
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"result_json is not JSON: {exc}", field="result_json") from None
        # The outputs' retention index is in Redis, which this worker cannot reach: recorded
        # here from the result, before it is stored (a crash in between leaks nothing), as a
        # Redis worker records its own; due at once when the result is refused.
        outputs = output_paths(result)
        await self._keep(outputs, keep=True)
        try:
            if not body.claim_next:
                await queue.complete(claimed, result)
                self.held.pop(claimed.id, None)
                return "completed"
            slot = self._slot(body.slot)
            if len(self.queues) > 1:
                # The next claim may be another queue's turn: two round trips, and fair.
                await queue.complete(claimed, result)
                following = await self.queues.claim(self.caps, slot=slot)
            else:
                # Completing claims this slot's next job in the same Lua call (one round trip
                # per job).
                following = await queue.complete(claimed, result, then_claim=self.caps, slot=slot)
        except StaleToken:
            await self._keep(outputs, keep=False)
            raise
        self.held.pop(claimed.id, None)
        self._claimed(rid, slot, following)
        return None

    async def _keep(self, paths: list[str], *, keep: bool) -> None:
        queue = self.services.queue
        due = int(time.time() * 1000) + queue.settings.retention_seconds * 1000 if keep else 0
        await keep_until(queue.redis, queue.keys, paths, due)

    async def _fail(self, body: worker_pb2.Fail, claimed: ClaimedJob) -> str:
        """Record a failure; one the worker left undecided is classified here with the error
        patterns, as a Redis worker classifies its own (the connector is the job's service)."""
        error, service = body.error or "failed", claimed.job.service
        retryable, delay = body.retryable, body.delay_s if body.HasField("delay_s") else None
        classified = None
        if body.classify:
            classified = self.patterns.classify(error, connector=service)
            retryable, delay = classified.retryable, classified.delay_s
        outcome = await self.queues.of(claimed).fail(
            claimed, error, retryable=retryable, delay_s=delay, classification=classified
        )
        self.held.pop(claimed.id, None)
        if classified is not None:
            await self.patterns.record(classified, error, service)
        return outcome

    async def close(self) -> None:
        for task in (self._control, self._registration):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for registry in self.registries if self._registration is not None else ():
            with contextlib.suppress(RedisError, OSError):
                await registry.deregister(self.caps.worker_id)
        for queue in self.queues if self.loras is not None else ():
            with contextlib.suppress(RedisError, OSError):
                await withdraw_loras(queue.redis, queue.keys, self.caps.worker_id)
        if self.slots:
            # Out of every queue's idle sets: no job's wake-up goes to a slot whose stream is gone.
            with contextlib.suppress(EmpError, RedisError, OSError):
                await self.queues.rest(self.caps, self.slots)
        if self.held:
            logger.info(
                "worker %s's stream ended holding %s: their leases will run out and the reaper "
                "will return them to pending", self.caps.worker_id, ", ".join(self.held),
            )  # fmt: skip
