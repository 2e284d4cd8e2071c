"""Who is calling: a bearer token resolved to a principal, with a short in-process cache.

Every API request carries a token; looking each one up in SQL would put a database round trip on
the hot path of submit. A resolved token is cached for ``cache_seconds`` (5 s by default). A
revoked token is dropped from every process's cache at once by the published revocation
(``emp_sql.revocations``), and within ``cache_seconds`` should that message be lost.
``last_used_at`` is written at most once per ``touch_seconds`` per token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
    # The browser session behind a studio request ("" for an API token).
    session_id: str = ""

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
        return await self.authenticate_digest(hash_token(token))

    async def authenticate_digest(self, digest: str) -> Principal:
        """The principal of the token whose sha256 is ``digest`` (a redeemed socket ticket)."""
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

    def cached(self, token: str) -> Principal | None:
        """The principal of a token resolved recently, without asking SQL; None otherwise."""
        entry = self._cache.get(hash_token(token))
        if entry is not None and entry.expires > time.monotonic():
            return entry.principal
        return None

    def forget(self, token_hash: str) -> None:
        """Drop a cached token at once (after revoking it in this process)."""
        self._cache.pop(token_hash, None)

    def drop(self, ends: Callable[[Principal], bool] | None = None) -> None:
        """Drop every cached token whose principal ``ends`` says has lost its access (a
        published revocation); all of them when ``ends`` is None (revocations may have been
        missed while the subscription was down)."""
        if ends is None:
            self._cache.clear()
            return
        for digest in [d for d, e in self._cache.items() if ends(e.principal)]:
            del self._cache[digest]

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
