"""Every queue of a deployment, on one Redis or spread over a Redis Cluster's primaries.

A queue's keys share one hash tag, so a queue lives in one slot; several queues spread over the
cluster (README, "Redis Cluster"). ``Queues`` holds one ``Queue`` per name and answers what needs
more than one of them:

- **which queue a submit goes to**: by service (``EMP_QUEUE_ROUTES="sdxl=gpu-a,simulation=cpu"``),
  else the default ``EMP_QUEUE``;
- **where a job is**: a job id does not name its queue, so a lookup asks each queue in turn, the
  default first: N queues cost at most N reads, never a scan;
- **a fair claim over several queues** (a worker serving ``--queue a --queue b``): each claim
  starts one queue further on and makes at most one call per queue, so a deep backlog in one
  queue delays another queue's job by at most one claim per queue served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis

from emp_core.errors import Conflict, InvalidInput, NotFound
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import Job, JobSpec
from emp_core.queue.functions import SubmitArgs
from emp_core.queue.idempotency import HEADER, REUSED, IdempotencyKeyReused, IdempotencyRecord
from emp_core.queue.queue import ClaimedJob, ClaimResult, Queue, numbered
from emp_core.redis import text
from emp_core.settings import QueueSettings


class Queues:
    """The queues ``names`` (default: every queue the settings name) on one client."""

    def __init__(
        self,
        redis: Redis,
        settings: QueueSettings,
        names: Sequence[str] | None = None,
        *,
        built: Mapping[str, Queue] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        names = list(dict.fromkeys(names or settings.queue_names))
        if not names:
            raise InvalidInput("name at least one queue", field="queue")
        built = built or {}
        self._by_name = {
            name: built.get(name) or Queue(redis, settings.model_copy(update={"queue": name}))
            for name in names
        }
        self._order = list(self._by_name.values())
        self._turn = 0  # where the next claim starts
        # Per worker slot, the queues whose idle sets an empty claim of this process entered it
        # in: when it takes a job from one queue it leaves the others' (``_busy``).
        self._idle_in: dict[int, set[str]] = {}

    def __iter__(self) -> Iterator[Queue]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def default(self) -> Queue:
        """The first queue: the settings' ``queue`` unless ``names`` said otherwise."""
        return self._order[0]

    def named(self, name: str) -> Queue:
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFound(f"queue {name} is not one of {', '.join(self.names)}") from None

    def for_service(self, service: str) -> Queue:
        """The queue a job of ``service`` is submitted to (routes, else the default)."""
        name = self.settings.queue_for(service)
        return self._by_name.get(name) or self.default

    def serving(self, services: Iterable[str]) -> Queues:
        """The queues jobs of ``services`` are routed to, in this deployment's order (the default
        first), for one worker: its own claim rotation and idle record over the same ``Queue``
        objects. What the API serves a gRPC worker from, which names no queue itself."""
        routed = {self.settings.queue_for(service) for service in services}
        names = [name for name in self.names if name in routed] or [self.default.keys.queue]
        return Queues(self.redis, self.settings, names, built=self._by_name)

    def of(self, claimed: ClaimedJob) -> Queue:
        """The queue a claimed job came from: every report on it goes there."""
        return self._by_name[claimed.queue] if claimed.queue else self.default

    # --- submitting ------------------------------------------------------------------------------
    async def submit(self, data: JobSpec | Mapping[str, Any], *, traceparent: str = "") -> str:
        """Validate one job and enqueue it on its service's queue; returns its id."""
        spec = JobSpec.parse(data)
        return await self.for_service(spec.service).submit(spec, traceparent=traceparent)

    async def submit_many(
        self, items: Iterable[JobSpec | Mapping[str, Any]], *, traceparent: str = ""
    ) -> list[str]:
        """Validate every job, then enqueue each queue's share in one atomic call (a batch whose
        services route to several queues is atomic per queue); ids in the order given."""
        specs = list(items)
        groups: dict[str, list[SubmitArgs]] = {}
        where: list[tuple[str, int]] = []
        for index, item in enumerate(specs):
            with numbered(index, len(specs) > 1):
                spec = JobSpec.parse(item)
                queue = self.for_service(spec.service)
                group = groups.setdefault(queue.keys.queue, [])
                where.append((queue.keys.queue, len(group)))
                group.append(queue.prepare(spec, traceparent=traceparent))
        s = self.settings
        stored = {
            name: await self._by_name[name].functions.submit(
                prepared, s.events_maxlen, s.retention_seconds
            )
            for name, prepared in groups.items()
        }
        return [stored[name][i] for name, i in where]

    async def submit_once(
        self,
        args: SubmitArgs,
        record: IdempotencyRecord,
        *,
        archived: Callable[[str], Awaitable[bool]] | None = None,
    ) -> tuple[str, bool]:
        """Enqueue a job made by ``prepare`` on its service's queue unless ``record``'s key was
        used before: then the earlier job's id (``replayed`` True), or ``IdempotencyKeyReused``
        for a different request, whichever queue either went to.

        A key's record lives in the **default queue** (``Keys.idempotency``), so one record
        answers for every queue. A job of the default queue is checked, submitted and recorded
        in one atomic call, one round trip, as with a single queue. A job of another queue costs
        one round trip more: ``SET NX GET`` reserves the key in the default queue (key -> the
        new job's id and the body's fingerprint), then the job's own queue checks its record,
        submits and records (one call). The two writes are in two slots, so not one atomic
        step; what holds between them:

        - two requests with one key cannot both reserve it: the second sees the first's
          fingerprint, and is refused (another body) or answered with the first's job id;
        - a replay that finds no job under the reserved id (the first request is still on its
          way, or died between its two writes) submits the job itself under that id; a job id
          is created once (``emp_submit`` refuses an existing id), so the two cannot make two
          jobs. ``archived`` (the SQL archive, given by the web apps) keeps a job Redis has
          forgotten from being submitted again; one purged from Redis and the archive within
          the key's TTL would be;
        - a refused submit (bad input) frees the reservation, as the one-call submit records
          nothing; after a lost connection the reservation stays and the retry settles it;
        - the reservation is not covered by ``EMP_REDIS_WAIT_REPLICAS``: a failover can lose it
          while the job and its queue's own record survive. A retry of the same request is then
          still answered by that record; the same key with *another service* in the seconds
          around the failover could then submit a second job.
        """
        queue = self.for_service(args.service)
        home = self.default
        if queue is home:
            return await queue.submit_once(args, record)
        key = home.keys.idempotency(record.owner_id, record.key_digest)
        earlier = await self.redis.set(
            key, f"{args.id} {record.body_digest}", nx=True, get=True, ex=record.ttl_s
        )
        if earlier is None:
            try:
                return await queue.submit_once(args, record)
            except InvalidInput:
                await self.redis.delete(key)  # nothing was submitted: the key is free again
                raise
        earlier_id, _, earlier_body = text(earlier).partition(" ")
        if earlier_body != record.body_digest:
            raise IdempotencyKeyReused(f"{HEADER} {REUSED}", field=HEADER)
        if await self._holds(earlier_id) or (archived is not None and await archived(earlier_id)):
            return earlier_id, True
        try:
            job_id, _ = await queue.submit_once(replace(args, id=earlier_id), record)
        except Conflict:  # the first request's call landed meanwhile
            job_id = earlier_id
        return job_id, True

    async def _holds(self, job_id: str) -> bool:
        try:
            await self.locate(job_id)
        except NotFound:
            return False
        return True

    # --- finding a job ---------------------------------------------------------------------------
    async def locate(self, job_id: str) -> Queue:
        """The queue holding ``job_id``: one EXISTS per queue at most, the default first."""
        for queue in self._order:
            if await self.redis.exists(queue.keys.job(job_id)):
                return queue
        raise NotFound(f"job {job_id} does not exist", field="job_id")

    async def holding(self, job_id: str) -> Queue:
        """The queue holding ``job_id``, or the default one when none does (a job only in the
        archive): where to read its event stream, which is then simply empty."""
        try:
            return await self.locate(job_id)
        except NotFound:
            return self.default

    async def get(self, job_id: str) -> Job:
        """The job, from whichever queue holds it (``NotFound`` when none does)."""
        for queue in self._order:
            try:
                return await queue.get(job_id)
            except NotFound:
                continue
        raise NotFound(f"job {job_id} does not exist", field="job_id")

    async def cancel(self, job_id: str, reason: str = "cancelled by request") -> str:
        return await (await self.locate(job_id)).cancel(job_id, reason)

    async def depth(self) -> dict[str, int]:
        """Pending jobs per service over every queue."""
        total: dict[str, int] = {}
        for queue in self._order:
            for service, count in (await queue.depth()).items():
                total[service] = total.get(service, 0) + count
        return total

    # --- working ---------------------------------------------------------------------------------
    async def claim(
        self, caps: WorkerCapabilities, *, slot: int | None = None, first: str | None = None
    ) -> ClaimResult:
        """Claim from the queues in turn, starting one queue further on at each call, with at most
        one call per queue; the first job found wins. When no queue has one, the slot is idle in
        each of them (any one's next job wakes it) and ``retry_in`` is the soonest hint.

        ``first``: the queue whose job woke this slot (``WakeSignal.queue``), tried first without
        moving the turn on: that job woke this slot alone, so taking another queue's job first
        would leave it to an idle fallback claim."""
        count = len(self._order)
        woken = self._by_name.get(first) if first is not None else None
        if woken is not None:
            start = self._order.index(woken)
        else:
            start, self._turn = self._turn, (self._turn + 1) % count
        retry_in: float | None = None
        for i in range(count):
            queue = self._order[(start + i) % count]
            result = await queue.claim(caps, slot=slot)
            if result.claimed is not None:
                if slot is not None:
                    await self._busy(caps, slot, queue)
                return result
            if slot is not None:
                self._idle_in.setdefault(slot, set()).add(queue.keys.queue)
            if result.retry_in is not None:
                retry_in = result.retry_in if retry_in is None else min(retry_in, result.retry_in)
        return ClaimResult(None, retry_in)

    async def _busy(self, caps: WorkerCapabilities, slot: int, claimed_in: Queue) -> None:
        """``slot`` took a job of ``claimed_in`` (whose claim took it out of that queue's idle
        sets): it leaves the idle sets it entered in the other queues. Left there, the next job
        of such a queue would wake this busy slot instead of an idle one (one job wakes one slot)
        and wait for a fallback claim. One call per such queue; none with one queue, and none
        for a slot that found work without going idle."""
        for name in self._idle_in.pop(slot, set()) - {claimed_in.keys.queue}:
            await self._by_name[name].rest(caps, 1, slot=slot)

    async def rest(self, caps: WorkerCapabilities, slots: int) -> None:
        self._idle_in.clear()
        for queue in self._order:
            await queue.rest(caps, slots)
