"""The worker registry: which workers are alive, what they advertise and what they are doing.

A live worker is the hash ``Keys.worker(id)`` with a TTL, refreshed every few seconds; a worker that
dies simply lets it expire. ``Keys.workers()`` indexes the ids by last-seen time (ms) so a listing
needs no SCAN; an id whose hash has expired is dropped from the index when a listing meets it.
The claim, complete, fail and cancel functions write ``state`` and ``job_id`` into the hash, and
only while it exists, so they never resurrect an expired worker.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from emp_core import __version__
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.keys import Keys
from emp_core.redis import text_list, text_map


def _now_ms() -> int:
    return int(time.time() * 1000)


class WorkerInfo(BaseModel):
    """A registered worker as the registry reads it back."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    machine_id: str | None = None
    capabilities: WorkerCapabilities
    slots: int = 1
    state: str = "idle"
    job_id: str | None = None
    hostname: str = ""
    pid: int = 0
    version: str = ""
    started_at: datetime
    last_seen: datetime

    @property
    def services(self) -> list[str]:
        return list(self.capabilities.services)

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> WorkerInfo:
        def ms(name: str) -> datetime:
            return datetime.fromtimestamp(int(fields.get(name) or 0) / 1000, UTC)

        return cls(
            worker_id=fields["worker_id"],
            machine_id=fields.get("machine_id") or None,
            capabilities=WorkerCapabilities.model_validate_json(fields["capabilities"]),
            slots=int(fields.get("slots") or 1),
            state=fields.get("state") or "idle",
            job_id=fields.get("job_id") or None,
            hostname=fields.get("hostname", ""),
            pid=int(fields.get("pid") or 0),
            version=fields.get("version", ""),
            started_at=ms("started_at"),
            last_seen=ms("last_seen"),
        )


class WorkerRegistry:
    """Registers, refreshes, lists and removes workers of one queue.

    ``ttl_s`` is how long a worker stays listed without a refresh; refresh at most a third of it.
    """

    def __init__(
        self, redis: Redis, keys: Keys, *, ttl_s: float = 15.0, also: Sequence[Keys] = ()
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = max(1, int(ttl_s * 1000))
        # Other queues whose workers ``live`` lists too (a web process over several queues).
        self.also = [k for k in also if k != keys]

    async def register(
        self, caps: WorkerCapabilities, *, slots: int = 1, state: str = "idle"
    ) -> None:
        """Write the worker's hash with the TTL and index it."""
        now = _now_ms()
        key = self.keys.worker(caps.worker_id)
        fields: dict[FieldT, EncodableT] = {
            "worker_id": caps.worker_id,
            "machine_id": caps.machine_id or "",
            "services": ",".join(caps.services),
            "capabilities": caps.wire,
            "slots": slots,
            "state": state,
            "job_id": "",
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "started_at": now,
            "last_seen": now,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self.ttl_ms)
            pipe.zadd(self.keys.workers(), {caps.worker_id: now})
            self._served(pipe, caps, now)
            await pipe.execute()

    def _served(self, pipe: Any, caps: WorkerCapabilities, now: int) -> None:
        until = now + self.ttl_ms
        pipe.hset(self.keys.services_served(), mapping={s: until for s in caps.services})

    async def refresh(
        self, caps: WorkerCapabilities, *, slots: int = 1, state: str | None = None
    ) -> bool:
        """Extend the TTL and the last-seen time, and set ``state`` when given (``draining``
        while the worker shuts down). Returns False when the hash had already expired (the
        process stalled longer than the TTL), in which case it is registered afresh."""
        now = _now_ms()
        key = self.keys.worker(caps.worker_id)
        fields: dict[FieldT, EncodableT] = {"last_seen": now}
        if state is not None:
            fields["state"] = state
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self.ttl_ms)
            pipe.zadd(self.keys.workers(), {caps.worker_id: now})
            self._served(pipe, caps, now)
            existed, *_ = await pipe.execute()
        if not existed:
            await self.register(caps, slots=slots, state=state or "idle")
            return False
        return True

    async def deregister(self, worker_id: str) -> None:
        """Remove the worker at once (a clean exit); a crashed worker expires instead."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers(), worker_id)
            await pipe.execute()

    async def get(self, worker_id: str) -> WorkerInfo | None:
        raw = await self.redis.hgetall(self.keys.worker(worker_id))
        fields = text_map(raw)
        return WorkerInfo.from_redis(fields) if "capabilities" in fields else None

    async def live(self) -> list[WorkerInfo]:
        """Every worker whose hash has not expired, most recently seen first, in this queue and
        the ``also`` queues (a worker serving several is listed once). Ids whose hash has
        expired are removed from the index on the way."""
        if not self.also:
            return await self._live_in(self.keys)
        seen: dict[str, WorkerInfo] = {}
        for keys in [self.keys, *self.also]:
            for info in await self._live_in(keys):
                if info.worker_id not in seen or seen[info.worker_id].last_seen < info.last_seen:
                    seen[info.worker_id] = info
        return sorted(seen.values(), key=lambda w: w.last_seen, reverse=True)

    async def _live_in(self, keys: Keys) -> list[WorkerInfo]:
        ids = text_list(await self.redis.zrange(keys.workers(), 0, -1, desc=True))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(keys.worker(worker_id))
            hashes = await pipe.execute()
        out: list[WorkerInfo] = []
        gone: list[str] = []
        for worker_id, raw in zip(ids, hashes, strict=True):
            fields = text_map(raw)
            if "capabilities" in fields:
                out.append(WorkerInfo.from_redis(fields))
            else:
                gone.append(worker_id)
        if gone:
            await self.redis.zrem(keys.workers(), *gone)
        return out


async def unserved_warning(redis: Redis, keys: Keys, service: str) -> str | None:
    """Why a job for ``service`` may wait indefinitely, or None when a live worker serves it:
    one HGET, cheap enough for every submit."""
    until = await redis.hget(keys.services_served(), service)
    if until is None:
        return (
            f"no worker has ever served {service!r} on this queue: the job waits until one "
            "registers (check the service name)"
        )
    if int(until) < _now_ms():
        return f"no live worker serves {service!r} now: the job waits until one registers"
    return None


class ServedCache:
    """``unserved_warning`` for a process that submits a lot (the API, the studio): a service
    found served is not asked about again for up to ``ttl_s`` (and never past the time it is
    served until), so a busy API asks once a second per service instead of once per submit. An
    unserved service is asked about every time: a worker that registers clears its warning at
    once. The cost: for up to ``ttl_s`` after the last worker of a service died, its submits
    carry no warning."""

    _MAX = 1024  # (queue, service) pairs kept; services are names users send

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._served: dict[tuple[str, str], float] = {}

    async def warning(self, redis: Redis, keys: Keys, service: str) -> str | None:
        key = (keys.queue, service)
        if self._served.get(key, 0.0) > time.monotonic():
            return None
        warning = await unserved_warning(redis, keys, service)
        if warning is None:
            if len(self._served) >= self._MAX:
                self._served.clear()
            self._served[key] = time.monotonic() + self.ttl_s
        return warning
