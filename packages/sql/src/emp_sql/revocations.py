"""Revocations: a token, some sessions or a whole user's access ended, said once on the
revocations channel so every web process acts on it at once.

Whoever ends access (the studio's sign-out and account pages, an admin disabling a user, ``emp
tokens revoke``) publishes a ``Revocation`` after the change is committed. Each web process hears
it on its one pub/sub connection (``emp_web.hub``): the API drops the credentials it cached, and
both apps close with 1008 the open sockets whose principal it matches. Nothing is polled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from emp_core.queue.keys import Keys
from emp_sql.auth import Principal

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Revocation:
    """What ended: API tokens by id, browser sessions by id, or everything of a user (disabled)."""

    token_ids: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    user_id: str | None = None
    reason: str = "access was revoked"
    _ids: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", frozenset(self.token_ids) | frozenset(self.session_ids))

    def ends(self, principal: Principal) -> bool:
        """Whether a caller authenticated as ``principal`` has lost its access."""
        if self.user_id is not None and principal.user_id == self.user_id:
            return True
        return bool(
            (principal.token_id and principal.token_id in self.token_ids)
            or (principal.session_id and principal.session_id in self.session_ids)
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "token_ids": self.token_ids,
                "session_ids": self.session_ids,
                "user_id": self.user_id,
                "reason": self.reason,
            }
        )

    @classmethod
    def decode(cls, data: bytes | str) -> Revocation:
        body = orjson.loads(data)
        return cls(
            token_ids=tuple(str(t) for t in body.get("token_ids") or ()),
            session_ids=tuple(str(s) for s in body.get("session_ids") or ()),
            user_id=body.get("user_id"),
            reason=str(body.get("reason") or "access was revoked")[:100],
        )


async def publish(redis: Redis, keys: Keys, revocation: Revocation) -> bool:
    """Tell every web process; False (logged) when Redis cannot be reached, in which case the
    API's caches still forget within their lifetime (``EMP_API_AUTH_CACHE_SECONDS``)."""
    try:
        # Sharded, like every channel of a queue: the event hub listens with SSUBSCRIBE.
        await redis.spublish(keys.revocations_channel(), revocation.encode())
    except (RedisError, OSError) as exc:
        logger.warning("could not publish a revocation (%s); caches expire on their own", exc)
        return False
    return True
