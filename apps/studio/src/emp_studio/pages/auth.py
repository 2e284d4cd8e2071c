"""Signing in and out. The sign-in page is the one page besides ``/health`` that needs no
session; it still carries a CSRF token, so no other site can sign a browser into an account."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from emp_sql.users import UserRepository
from emp_studio.deps import ServicesDep, verify_csrf
from emp_studio.render import page, redirect
from emp_studio.session import sign_in, sign_out, signed_in

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
    if await signed_in(request.session, services.database) is not None:
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
    async with services.database.session() as db:
        user = await UserRepository(db).authenticate(email, password) if email else None
    if user is None:
        logger.info("a sign-in as %r was refused", email[:80])
        context = {
            "next": safe_next(next),
            "email": email,
            "error": "That email and password do not match an account.",
        }
        return page(request, "signin.html", context, status_code=401)
    sign_in(request.session, user)
    logger.info("user %s signed in", user.email)
    return redirect(request, safe_next(next))


@router.post("/signout")
async def signout(request: Request) -> Response:
    sign_out(request.session)
    return redirect(request, "/signin")
