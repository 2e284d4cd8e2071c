"""Who is calling: a bearer token resolved to a principal, with a short in-process cache.

Every API request carries a token; looking each one up in SQL would put a database round trip on
the hot path of submit. A resolved token is cached for ``cache_seconds`` (5 s by default), so a
revoked token stops working within that time in every process (at once in the process that
revoked it), and ``last_used_at`` is written at most once per ``touch_seconds`` per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from emp_core.errors import EmpError
from emp_sql.models import Role
from emp_sql.session import Database
from emp_sql.tokens import TokenRepository, hash_token

_CACHE_MAX = 10_000


class Unauthorized(EmpError):
    """No token, or one that is unknown or revoked."""

    status_code = 401
    code = "unauthorized"


class Forbidden(EmpError):
    """A valid token whose user may not do this (a non-admin on an admin route)."""

    status_code = 403
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Principal:
    """The user behind a request."""

    user_id: str
    email: str
    role: Role
    token_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this needs an admin token")

    def may_see(self, customer_id: str | None) -> bool:
        """A user sees the jobs they submitted; an admin sees every job."""
        return self.is_admin or customer_id == self.user_id


@dataclass(slots=True)
class _Entry:
    principal: Principal
    expires: float


class Authenticator:
    """Resolves bearer tokens for one process."""

    def __init__(
        self, database: Database, *, cache_seconds: float = 5.0, touch_seconds: float = 60.0
    ) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        self.touch_seconds = touch_seconds
        self._cache: dict[str, _Entry] = {}
        self._touched: dict[str, float] = {}

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of ``token``; ``Unauthorized`` when it is missing, unknown or revoked."""
        if not token:
            raise Unauthorized("this needs a token: send `Authorization: Bearer <token>`")
        digest = hash_token(token)
        now = time.monotonic()
        entry = self._cache.get(digest)
        if entry is not None and entry.expires > now:
            principal = entry.principal
        else:
            principal = await self._resolve(digest)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = _Entry(principal, now + self.cache_seconds)
        if now - self._touched.get(principal.token_id, -self.touch_seconds) >= self.touch_seconds:
            await self._touch(principal.token_id, now)
        return principal

    def forget(self, token_hash: str) -> None:
        """Drop a cached token at once (after revoking it in this process)."""
        self._cache.pop(token_hash, None)

    async def _resolve(self, digest: str) -> Principal:
        async with self.database.session() as session:
            found = await TokenRepository(session).resolve(digest)
        if found is None:
            raise Unauthorized("the token is unknown or revoked")
        token, user = found
        return Principal(user.id, user.email, Role(user.role), token.id)

    async def _touch(self, token_id: str, now: float) -> None:
        if len(self._touched) >= _CACHE_MAX:
            self._touched.clear()
        self._touched[token_id] = now
        async with self.database.session() as session:
            await TokenRepository(session).touch(token_id, datetime.now(UTC))
