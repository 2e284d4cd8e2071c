"""API tokens: issued once in clear, stored as a sha256, revocable, with a last-used time.

A token carries 256 random bits, so an unsalted sha256 is enough: there is nothing to guess,
and a fast hash keeps the lookup on every request cheap (a password needs argon2; this does not).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emp_sql.models import ApiToken, User

TOKEN_PREFIX = "emp_"  # noqa: S105 - a marker that makes leaked tokens greppable


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: ``secret`` is shown once and never stored."""

    token: ApiToken
    secret: str


class TokenRepository:
    """API tokens within one session (one transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def issue(self, user: User, name: str = "") -> IssuedToken:
        secret = new_token()
        token = ApiToken(
            user_id=user.id, name=name[:200], token_hash=hash_token(secret), prefix=secret[:12]
        )
        self.session.add(token)
        await self.session.flush()
        return IssuedToken(token, secret)

    async def resolve(self, token_hash: str) -> tuple[ApiToken, User] | None:
        """The live token with this hash and its user; None when unknown or revoked."""
        result = await self.session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(
                ApiToken.token_hash == token_hash,
                ApiToken.revoked_at.is_(None),
                User.disabled_at.is_(None),
            )
        )
        row = result.one_or_none()
        return None if row is None else (row[0], row[1])

    async def touch(self, token_id: str, at: datetime) -> None:
        await self.session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=at)
        )

    async def revoke(self, token_id: str) -> bool:
        """Revoke a token; False when it does not exist or was revoked already."""
        result = await self.session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        return bool(getattr(result, "rowcount", 0))

    async def revoke_for_user(self, token_id: str, user_id: str) -> bool:
        """Revoke one of ``user_id``'s tokens; False when it is not theirs or not live."""
        result = await self.session.execute(
            update(ApiToken)
            .where(
                ApiToken.id == token_id,
                ApiToken.user_id == user_id,
                ApiToken.revoked_at.is_(None),
            )
            .values(revoked_at=datetime.now(UTC))
        )
        return bool(getattr(result, "rowcount", 0))

    async def for_user(self, user_id: str) -> list[ApiToken]:
        result = await self.session.execute(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at)
        )
        return list(result.scalars())
