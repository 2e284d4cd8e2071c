"""``Idempotency-Key``: a retried submit returns the job the first attempt created.

The check is part of the submit itself (``emp_submit`` in ``lua/emp.lua``): in one atomic call
the function reads the key's record and either answers with the earlier job or submits the job and
records key → job id. Two concurrent requests carrying one key therefore cannot both submit, a
failed submit records nothing, and a submit with a key costs one round trip like one without.

A key is scoped to one user (two users may pick the same key) and lives 24 hours. The request
body's fingerprint is stored beside the id, so reusing a key for a different job is refused
instead of silently answered with the wrong job.

With several queues the record lives in the default queue, whichever queue the job goes to, so
reusing a key with another service (another queue) is refused too; a job of another queue
reserves the key first, one round trip more (``Queues.submit_once`` says what holds between
the two writes).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from emp_core.errors import InvalidInput

TTL_SECONDS = 24 * 3600
HEADER = "Idempotency-Key"
# What a reused key is told (``emp_submit`` says the same).
REUSED = "this key was used with a different request; use a new key per job"
# Printable ASCII, as the IETF draft's examples (UUIDs, random strings) all are.
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")


class IdempotencyKeyReused(InvalidInput):
    """The key was used before with a different request."""

    code = "idempotency_key_reused"


def fingerprint(body: Any) -> str:
    """A stable digest of a request body (keys sorted)."""
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What ``emp_submit`` needs to submit once per key: whose key, the key's digest (the Redis
    key holds the digest, not the caller's text), the request body's fingerprint, and how long
    the record lives."""

    owner_id: str
    key_digest: str
    body_digest: str
    ttl_s: int = TTL_SECONDS

    @classmethod
    def of(
        cls, owner_id: str, key: str, body: Any, *, ttl_s: int = TTL_SECONDS
    ) -> IdempotencyRecord:
        """The record of ``key`` sent by ``owner_id`` with ``body``; a malformed key is refused
        with ``InvalidInput`` naming the header."""
        if not _VALID.match(key):
            raise InvalidInput(
                "must be 1-255 printable ASCII characters without spaces", field=HEADER
            )
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return cls(owner_id, digest, fingerprint(body), ttl_s)
