"""Signing in and out. The sign-in page is the one page besides ``/health`` that needs no
session; it still carries a CSRF token, so no other site can sign a browser into an account.

Failed sign-ins are limited per account and per address (``EMP_STUDIO_SIGNIN_*_LIMITS``, windows
of growing length, shared by every studio process through Redis): past a limit every attempt,
the right password included, is refused with 429 and a message saying how long to wait. Only
failures count, and a success clears the account's count."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from emp_sql.users import UserRepository
from emp_studio.deps import ServicesDep, verify_csrf
from emp_studio.render import page, redirect
from emp_studio.session import sign_in, sign_out, signed_in
from emp_web.ratelimit import RateLimited

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only, never another site's address."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    # Browsers drop tabs and newlines from URLs, so "/\t/evil.example" would read as "//evil…".
    if any(c.isspace() or not c.isprintable() for c in target):
        return "/"
    return target


@router.get("/signin")
async def signin_page(request: Request, services: ServicesDep, next: str = "/") -> Response:
    if await signed_in(request.session, services) is not None:
        return redirect(request, safe_next(next))
    return page(request, "signin.html", {"next": safe_next(next), "email": ""})


@router.post("/signin")
async def signin(
    request: Request,
    services: ServicesDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    account = email.strip().lower()[:320]
    address = request.client.host if request.client else "unknown"
    limits, rules = services.limiter, services.rules

    def again(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
        context = {"next": safe_next(next), "email": email, "error": error}
        return page(request, "signin.html", context, status_code=status, headers=headers)

    try:
        await limits.check(rules.signin_account, account, message="Too many failed sign-ins "
                           "for this account")  # fmt: skip
        await limits.check(rules.signin_address, address, message="Too many failed sign-ins "
                           "from your address")  # fmt: skip
    except RateLimited as exc:
        logger.info("a sign-in as %r from %s was refused: %s", email[:80], address, exc.message)
        return again(exc.message + ".", 429, {"Retry-After": str(exc.retry_after)})
    async with services.database.session() as db:
        user = await UserRepository(db).authenticate(email, password) if email else None
    if user is None:
        await limits.hit(rules.signin_account, account)
        await limits.hit(rules.signin_address, address)
        logger.info("a sign-in as %r from %s was refused", email[:80], address)
        return again("That email and password do not match an account.", 401)
    if user.is_disabled:
        logger.info("a sign-in as disabled user %s was refused", user.email)
        return again("This account is disabled. Ask an admin to enable it.", 403)
    await limits.clear(rules.signin_account, account)
    agent = request.headers.get("user-agent", "")
    await sign_in(request.session, user, services.sessions, address=address, agent=agent)
    logger.info("user %s signed in", user.email)
    return redirect(request, safe_next(next))


@router.post("/signout")
async def signout(request: Request, services: ServicesDep) -> Response:
    await sign_out(request.session, services.sessions)
    return redirect(request, "/signin")
