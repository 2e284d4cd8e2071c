"""A leader lease: at most one process at a time does a job (the archive projector, say).

Built on redis-py's ``Lock`` (SET NX PX to take it, its Lua scripts to renew and release only
while the key still holds our token), taken without blocking: a process that does not get it
stands by and asks again at its next renewal, so it takes over within one TTL of the leader's
death. The key is the caller's, from ``Keys`` like every other key.
"""

from __future__ import annotations

import contextlib
import uuid

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError


class LeaderLease:
    """A lease on ``key`` for ``ttl_s`` seconds, held by at most one ``holder`` at a time."""

    def __init__(self, redis: Redis, key: str, *, ttl_s: float, holder: str | None = None) -> None:
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.holder = holder or uuid.uuid4().hex
        # thread_local=False: the token belongs to this object, whichever task renews it.
        self._lock = Lock(
            redis, key, timeout=self.ttl_ms / 1000, blocking=False, thread_local=False
        )

    async def acquire_or_renew(self) -> bool:
        """True while this process holds the lease: renewed to a full TTL if it held it, else
        taken if free. False when another holder has it (a lost lease is noticed here)."""
        if self._lock.local.token is not None:
            try:
                return bool(await self._lock.reacquire())
            except LockError:  # LockNotOwnedError: it ran out, and maybe another took it
                self._lock.local.token = None
        return bool(await self._lock.acquire(blocking=False, token=self.holder))

    async def release(self) -> None:
        """Give the lease up now, if this process still holds it (a standby takes over at its
        next renewal instead of after the TTL)."""
        if self._lock.local.token is None:
            return
        # LockNotOwnedError: it ran out already, so there is nothing of ours to delete.
        with contextlib.suppress(LockError):
            await self._lock.release()
