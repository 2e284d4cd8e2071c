"""Users: create, find, check a password, disable. Passwords are hashed with argon2id, on a
worker thread: a hash takes tens of milliseconds of CPU, which on the event loop would stall every
other request of the process (six clients failing sign-in raised everyone's p50 a hundredfold)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from emp_core.errors import Conflict, InvalidInput
from emp_sql.models import Role, User

# Deliberately loose: the address is an identifier here, not a mailbox we write to.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if len(value) > 320 or not _EMAIL.match(value):
        raise InvalidInput(f"{email!r} is not an email address", field="email")
    return value


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


class UserRepository:
    """Users within one session (one transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, email: str, password: str, *, role: Role = Role.USER) -> User:
        """Add a user; ``Conflict`` when the email is taken."""
        address = normalise_email(email)
        if await self.by_email(address) is not None:
            raise Conflict(f"a user with email {address} exists", field="email")
        password_hash = await asyncio.to_thread(hash_password, password)
        user = User(email=address, password_hash=password_hash, role=role.value)
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError:  # a concurrent create won the unique constraint
            raise Conflict(f"a user with email {address} exists", field="email") from None
        return user

    async def by_email(self, email: str) -> User | None:
        address = email.strip().lower()
        result = await self.session.execute(select(User).where(User.email == address))
        return result.scalar_one_or_none()

    async def by_id(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def list_all(self, *, limit: int = 1000) -> list[User]:
        """Users by email, at most ``limit`` of them (an admin's user list)."""
        result = await self.session.execute(select(User).order_by(User.email).limit(limit))
        return list(result.scalars())

    async def count(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(User)) or 0)

    async def authenticate(self, email: str, password: str) -> User | None:
        """The user when the password is right, else None; rehashes an outdated hash. A
        disabled user is returned too (the caller says so, once the password proved who asks)."""
        user = await self.by_email(email)
        if user is None:
            # Spend the same time as a real check, so timing does not reveal which emails exist.
            await asyncio.to_thread(_hasher.hash, password)
            return None
        if not await self.check_password(user, password):
            return None
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = await asyncio.to_thread(_hasher.hash, password)
        return user

    async def check_password(self, user: User, password: str) -> bool:
        return await asyncio.to_thread(_verify, user.password_hash, password)

    async def set_password(self, user: User, password: str) -> None:
        user.password_hash = await asyncio.to_thread(hash_password, password)

    async def set_disabled(self, user: User, disabled: bool) -> None:
        user.disabled_at = datetime.now(UTC) if disabled else None
