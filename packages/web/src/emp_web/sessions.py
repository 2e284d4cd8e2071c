"""Server-side browser sessions, in Redis: what makes signing out (and everything like it) end a
session at once, on every page and every open socket.

The cookie holds a random secret; Redis holds ``session:{id}`` (the id is the secret's sha256,
so a copy of Redis opens no session) with the user, a stamp of their password hash, when it
started and was last used, and where from, and ``sessions:{user}`` lists a user's ids. A session
ends when it is ended (sign-out; "sign out everywhere", a password change, an admin's reset or
disabling the user end all of a user's), when it has not been used for ``idle_seconds`` (the key's
TTL, renewed as it is used) or ``max_seconds`` after it started, whichever comes first. Every end
is published as a ``Revocation``, so sockets the session opened close at once in every process.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from emp_core.queue.keys import Keys
from emp_core.redis import text_list, text_map
from emp_sql.revocations import Revocation, publish


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    user_id: str
    stamp: str
    started: float
    last_seen: float
    address: str
    agent: str


def session_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


class SessionStore:
    def __init__(self, redis: Redis, keys: Keys, *, idle_seconds: int, max_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        # Renew the idle TTL at most this often per session (a write per page otherwise).
        self.touch_seconds = min(60.0, idle_seconds / 10)

    async def start(self, user_id: str, stamp: str, *, address: str, agent: str) -> str:
        """A new session; returns the secret the cookie carries."""
        secret = secrets.token_urlsafe(32)
        sid = session_id(secret)
        now = time.time()
        fields: dict[Any, Any] = {
            "user_id": user_id, "stamp": stamp, "started": repr(now), "last_seen": repr(now),
            "address": address[:64], "agent": agent[:200],
        }  # fmt: skip
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.session(sid), mapping=fields)
            pipe.expire(self.keys.session(sid), min(self.idle_seconds, self.max_seconds))
            pipe.zadd(self.keys.user_sessions(user_id), {sid: int(now * 1000)})
            pipe.expire(self.keys.user_sessions(user_id), self.max_seconds)
            await pipe.execute()
        return secret

    async def find(self, secret: str) -> SessionRecord | None:
        """The live session behind ``secret``, its idle TTL renewed; None once it has ended."""
        sid = session_id(secret)
        record = self._record(sid, await self.redis.hgetall(self.keys.session(sid)))
        if record is None:
            return None
        now = time.time()
        age = now - record.started
        if age >= self.max_seconds:
            await self.end(record.user_id, [sid], "the session reached its lifetime")
            return None
        if now - record.last_seen >= self.idle_seconds:  # the TTL's job, to the second
            await self.end(record.user_id, [sid], "the session was idle too long")
            return None
        if now - record.last_seen >= self.touch_seconds:
            ttl = max(1, math.ceil(min(self.idle_seconds, self.max_seconds - age)))
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.session(sid), "last_seen", repr(now))
                pipe.expire(self.keys.session(sid), ttl)
                await pipe.execute()
        return record

    def _record(self, sid: str, raw: dict[Any, Any]) -> SessionRecord | None:
        fields = text_map(raw)
        if not fields.get("user_id"):
            return None
        try:
            return SessionRecord(
                id=sid, user_id=fields["user_id"], stamp=fields.get("stamp", ""),
                started=float(fields["started"]), last_seen=float(fields["last_seen"]),
                address=fields.get("address", ""), agent=fields.get("agent", ""),
            )  # fmt: skip
        except (KeyError, ValueError):
            return None

    async def list(self, user_id: str) -> list[SessionRecord]:
        """A user's live sessions, newest first (ids of ended ones are pruned on the way)."""
        index = self.keys.user_sessions(user_id)
        ids = text_list(await self.redis.zrevrange(index, 0, 999))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(self.keys.session(sid))
            rows = await pipe.execute()
        live = [r for sid, raw in zip(ids, rows, strict=True) if (r := self._record(sid, raw))]
        gone = [sid for sid, raw in zip(ids, rows, strict=True) if not raw]
        if gone:
            await self.redis.zrem(index, *gone)
        return [r for r in live if r.user_id == user_id]

    async def end(self, user_id: str, ids: builtins.list[str], reason: str) -> builtins.list[str]:
        """End these sessions of ``user_id`` and publish it; the ids that were live."""
        if not ids:
            return []
        async with self.redis.pipeline(transaction=True) as pipe:
            for sid in ids:
                pipe.delete(self.keys.session(sid))
            pipe.zrem(self.keys.user_sessions(user_id), *ids)
            deleted = await pipe.execute()
        ended = [sid for sid, n in zip(ids, deleted, strict=False) if n]
        await publish(
            self.redis, self.keys, Revocation(session_ids=tuple(ids), reason=reason[:100])
        )
        return ended

    async def end_all(
        self, user_id: str, reason: str, *, keep: str | None = None
    ) -> builtins.list[str]:
        """End every session of ``user_id`` (but ``keep``, the id of the one asking)."""
        index = self.keys.user_sessions(user_id)
        ids = text_list(await self.redis.zrange(index, 0, -1))
        return await self.end(user_id, [i for i in ids if i != keep], reason)
