"""My account: change my password, see and end my sessions, list, create and revoke my API tokens.

Every way access ends is published (``emp_sql.revocations``), so it ends at once everywhere: a
revoked token's open API sockets close and every API process forgets it; an ended session's
pages and sockets stop. Changing the password ends every other session and starts this one
afresh. A new token is shown once, on the page that created it, and never again.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from emp_core.errors import InvalidInput, NotFound
from emp_sql.auth import Principal
from emp_sql.revocations import Revocation, publish
from emp_sql.tokens import TokenRepository
from emp_sql.users import MIN_PASSWORD_LENGTH, UserRepository
from emp_studio.deps import ServicesDep, ViewerDep, verify_csrf
from emp_studio.render import page, redirect
from emp_studio.session import sign_in
from emp_studio.state import Services
from emp_web.ratelimit import RateLimited

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def _account_page(
    request: Request,
    services: Services,
    viewer: Principal,
    *,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    new_token: str | None = None,
    status_code: int = 200,
) -> Response:
    async with services.database.session() as db:
        tokens = await TokenRepository(db).for_user(viewer.user_id)
    context: dict[str, Any] = {
        "nav": "account",
        "sessions": [
            {**asdict(s), "started": _when(s.started), "last_seen": _when(s.last_seen)}
            for s in await services.sessions.list(viewer.user_id)
        ],
        "current_session": viewer.session_id,
        "tokens": sorted(tokens, key=lambda t: (t.revoked_at is not None, t.created_at)),
        "errors": errors or {},
        "notice": notice,
        "new_token": new_token,
        "min_password": MIN_PASSWORD_LENGTH,
    }
    return page(request, "account.html", context, status_code=status_code)


@router.get("/account")
async def account_page(
    request: Request, viewer: ViewerDep, services: ServicesDep, done: str | None = None
) -> Response:
    notices = {
        "password": "Your password is changed; every other session has ended.",
        "sessions": "Every other session has ended.",
        "session": "That session has ended.",
        "revoked": "The token is revoked; it no longer works anywhere.",
    }
    return await _account_page(request, services, viewer, notice=notices.get(done or ""))


@router.post("/account/password")
async def change_password(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    current: Annotated[str, Form(max_length=1024)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    rule = services.rules.signin_account
    try:  # the current password is a password guess like any other: limited the same way
        await services.limiter.check(rule, viewer.email, message="Too many wrong passwords")
    except RateLimited as exc:
        errors = {"current": exc.message}
        return await _account_page(request, services, viewer, errors=errors, status_code=429)
    async with services.database.session() as db:
        users = UserRepository(db)
        user = await users.by_id(viewer.user_id)
        if user is None:
            raise NotFound("your account no longer exists")
        if not await users.check_password(user, current):
            await services.limiter.hit(rule, viewer.email)
            errors = {"current": "That is not your current password."}
            return await _account_page(request, services, viewer, errors=errors, status_code=422)
        try:
            await users.set_password(user, password)
        except InvalidInput as exc:
            errors = {"password": exc.message[:1].upper() + exc.message[1:] + "."}
            return await _account_page(request, services, viewer, errors=errors, status_code=422)
    await services.sessions.end_all(viewer.user_id, "the password changed")
    agent = request.headers.get("user-agent", "")
    address = request.client.host if request.client else "unknown"
    await sign_in(request.session, user, services.sessions, address=address, agent=agent)
    logger.info("user %s changed their password; their other sessions ended", viewer.email)
    return redirect(request, "/account?done=password")


@router.post("/account/sessions/end-others")
async def end_other_sessions(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    ended = await services.sessions.end_all(
        viewer.user_id, "signed out everywhere", keep=viewer.session_id
    )
    logger.info("user %s ended %d other session(s)", viewer.email, len(ended))
    return redirect(request, "/account?done=sessions")


@router.post("/account/sessions/{session_id}/end")
async def end_session(
    request: Request, session_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    mine = {s.id for s in await services.sessions.list(viewer.user_id)}
    if session_id not in mine:
        raise NotFound("no such session of yours")
    await services.sessions.end(viewer.user_id, [session_id], "signed out")
    if session_id == viewer.session_id:
        request.session.clear()
        return redirect(request, "/signin")
    return redirect(request, "/account?done=session")


@router.post("/account/tokens")
async def create_token(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if not name.strip():
        errors = {"name": "Name the token, so you can tell it apart later."}
        return await _account_page(request, services, viewer, errors=errors, status_code=422)
    async with services.database.session() as db:
        user = await UserRepository(db).by_id(viewer.user_id)
        if user is None:
            raise NotFound("your account no longer exists")
        issued = await TokenRepository(db).issue(user, name.strip())
    logger.info("user %s created API token %s", viewer.email, issued.token.id)
    return await _account_page(request, services, viewer, new_token=issued.secret)


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_token(
    request: Request, token_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    async with services.database.session() as db:
        revoked = await TokenRepository(db).revoke_for_user(token_id, viewer.user_id)
    if not revoked:
        raise NotFound("no such live token of yours")
    revocation = Revocation(token_ids=(token_id,), reason="the token was revoked")
    await publish(services.redis, services.queue.keys, revocation)
    logger.info("user %s revoked API token %s", viewer.email, token_id)
    return redirect(request, "/account?done=revoked")
