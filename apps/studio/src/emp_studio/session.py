"""The browser session: who is signed in, and the token that proves a form came from our page.

The session itself lives in Redis (``emp_web.sessions``); the cookie, which Starlette's
``SessionMiddleware`` signs with itsdangerous (HttpOnly, SameSite=Lax, Secure outside
development), holds only the session's secret and a CSRF token. Signing out ends the Redis record,
so a copy of the cookie taken before is worth nothing after. The record keeps a stamp of the
password hash, and the user is read from SQL on every request, so a password changed elsewhere,
a disabled or deleted user, or a changed role takes effect at once.

CSRF: every state-changing request must carry the session's token, as the form field
``csrf_token`` or (htmx) the ``X-CSRF-Token`` header. SameSite=Lax already keeps the cookie off
cross-site POSTs in current browsers; the token is the defence that does not depend on that.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import MutableMapping
from typing import Any

from emp_core.errors import EmpError
from emp_sql.auth import Principal
from emp_sql.models import Role, User
from emp_sql.users import UserRepository
from emp_studio.state import Services
from emp_web.sessions import SessionStore

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_SECRET, _CSRF = "sid", "csrf"

Session = MutableMapping[str, Any]


class SignInRequired(EmpError):
    """No one is signed in: the page answers with a redirect to the sign-in page."""

    status_code = 401
    code = "sign_in_required"

    def __init__(self, next_url: str) -> None:
        super().__init__("sign in to continue")
        self.next_url = next_url


class CsrfRefused(EmpError):
    """A state-changing request without this session's CSRF token."""

    status_code = 403
    code = "csrf"


def password_stamp(user: User) -> str:
    """A short digest of the password hash: it changes when the password does."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def csrf_token(session: Session) -> str:
    """This session's CSRF token, created on first use (signed-out pages need one too)."""
    token = session.get(_CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_CSRF] = token
    return token


def check_csrf(session: Session, submitted: str | None) -> None:
    expected = session.get(_CSRF)
    if not isinstance(expected, str) or not submitted:
        raise CsrfRefused("this form has expired: reload the page and try again")
    if not secrets.compare_digest(expected.encode(), submitted.encode()):
        raise CsrfRefused("this form has expired: reload the page and try again")


async def sign_in(
    session: Session, user: User, store: SessionStore, *, address: str, agent: str
) -> None:
    """Start a fresh session for ``user``: everything from before is dropped, the CSRF token
    included, so a token planted before sign-in is worth nothing after it."""
    session.clear()
    session[_SECRET] = await store.start(
        user.id, password_stamp(user), address=address, agent=agent
    )
    session[_CSRF] = secrets.token_urlsafe(32)


def session_secret(session: Session) -> str | None:
    secret = session.get(_SECRET)
    return secret if isinstance(secret, str) and secret else None


async def sign_out(session: Session, store: SessionStore) -> None:
    """End this session in Redis (its sockets close too) and forget the cookie's content."""
    secret = session_secret(session)
    session.clear()
    if secret is not None and (record := await store.find(secret)) is not None:
        await store.end(record.user_id, [record.id], "signed out")


async def signed_in(session: Session, services: Services) -> Principal | None:
    """The signed-in user, or None: no session, one that ended (signed out, idle, past its
    lifetime), a deleted or disabled user, a password changed since it started."""
    secret = session_secret(session)
    if secret is None:
        return None
    record = await services.sessions.find(secret)
    if record is None:
        session.pop(_SECRET, None)
        return None
    async with services.database.session() as db:
        user = await UserRepository(db).by_id(record.user_id)
    if user is None or user.is_disabled or record.stamp != password_stamp(user):
        await services.sessions.end(record.user_id, [record.id], "the account changed")
        session.pop(_SECRET, None)
        return None
    return Principal(user.id, user.email, Role(user.role), token_id="", session_id=record.id)
