"""The browser session: who is signed in, and the token that proves a form came from our page.

The session lives in a cookie that Starlette's ``SessionMiddleware`` signs with itsdangerous
(HttpOnly, SameSite=Lax): it holds the user id, a stamp of the password hash and a CSRF token.
The stamp signs a user out everywhere when their password changes; the user is read from SQL on
every request, so a deleted user or a changed role takes effect at once.

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
from emp_sql.session import Database
from emp_sql.users import UserRepository

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_USER, _STAMP, _CSRF = "uid", "stamp", "csrf"

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


def sign_in(session: Session, user: User) -> None:
    """Start a fresh session for ``user``: everything from before is dropped, the CSRF token
    included, so a token planted before sign-in is worth nothing after it."""
    session.clear()
    session[_USER] = user.id
    session[_STAMP] = password_stamp(user)
    session[_CSRF] = secrets.token_urlsafe(32)


def sign_out(session: Session) -> None:
    session.clear()


async def signed_in(session: Session, database: Database) -> Principal | None:
    """The signed-in user, or None (no session, a deleted user, a changed password)."""
    user_id = session.get(_USER)
    if not isinstance(user_id, str):
        return None
    async with database.session() as db:
        user = await UserRepository(db).by_id(user_id)
    if user is None or session.get(_STAMP) != password_stamp(user):
        session.pop(_USER, None)
        session.pop(_STAMP, None)
        return None
    # Principal is the API's notion of a caller; a browser session has no API token behind it.
    return Principal(user.id, user.email, Role(user.role), token_id="")
