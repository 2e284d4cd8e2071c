"""``Idempotency-Key``: a retried submit returns the job the first attempt created.

The key is recorded with ``SET NX`` *before* the job is submitted, with the id the job is about to
get, so two concurrent requests carrying one key cannot both submit: the loser reads the winner's
job id. A key is scoped to one user (two users may pick the same key) and lives 24 hours. The
request body's fingerprint is stored beside the id, so reusing a key for a different job is
refused instead of silently answered with the wrong job.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from emp_core.errors import Conflict, InvalidInput
from emp_core.queue.keys import Keys

TTL_SECONDS = 24 * 3600
HEADER = "Idempotency-Key"
# Printable ASCII, as the IETF draft's examples (UUIDs, random strings) all are.
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")


class IdempotencyKeyReused(InvalidInput):
    """The key was used before with a different request."""

    code = "idempotency_key_reused"


def fingerprint(body: Any) -> str:
    """A stable digest of a request body (keys sorted)."""
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:32]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class IdempotencyKeys:
    """The key → job records of one queue."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int = TTL_SECONDS) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, owner_id: str, key: str) -> str:
        if not _VALID.match(key):
            raise InvalidInput(
                "must be 1-255 printable ASCII characters without spaces", field=HEADER
            )
        return self.keys.idempotency(owner_id, hashlib.sha256(key.encode()).hexdigest()[:32])

    async def reserve(self, owner_id: str, key: str, job_id: str, body_digest: str) -> str | None:
        """Record ``key`` → ``job_id``. Returns None when this call recorded it (go on and
        submit), or the job id an earlier request recorded (answer with that job)."""
        redis_key = self._key(owner_id, key)
        value = f"{job_id} {body_digest}"
        for _ in range(3):
            if await self.redis.set(redis_key, value, nx=True, ex=self.ttl_s):
                return None
            existing = await self.redis.get(redis_key)
            if existing is None:  # expired between the two calls: try to take it again
                continue
            earlier_id, _, earlier_digest = _text(existing).partition(" ")
            if earlier_digest != body_digest:
                raise IdempotencyKeyReused(
                    "this key was used with a different request; use a new key per job",
                    field=HEADER,
                )
            return earlier_id
        raise Conflict("the key is contended; retry the request", field=HEADER)

    async def release(self, owner_id: str, key: str, job_id: str, body_digest: str) -> None:
        """Forget a reservation whose submit failed, so a retry can submit afresh; only while
        the record is still this request's (compare-and-delete under WATCH)."""
        redis_key = self._key(owner_id, key)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(redis_key)
                current = await pipe.get(redis_key)
                if current is None or _text(current) != f"{job_id} {body_digest}":
                    return
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.delete(redis_key)
                await pipe.execute()
            except WatchError:  # someone else changed it: then it is not ours to delete
                return
