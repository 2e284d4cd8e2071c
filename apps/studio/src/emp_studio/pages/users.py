"""Admins: the people who may sign in, and a form to add one."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from emp_core.errors import Conflict, EmpError, InvalidInput, NotFound
from emp_sql.auth import Principal
from emp_sql.models import Role, User
from emp_sql.revocations import Revocation, publish
from emp_sql.users import MIN_PASSWORD_LENGTH, UserRepository
from emp_studio.deps import AdminDep, ServicesDep, verify_csrf
from emp_studio.render import page, redirect
from emp_studio.state import Services

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])


async def _users_page(
    request: Request,
    services: Services,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    created: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    async with services.database.session() as db:
        users = await UserRepository(db).list_all()
    context = {
        "nav": "users",
        "users": users,
        "form": form or {"email": "", "role": "user"},
        "errors": errors or {},
        "created": created,
        "notice": notice,
        "min_password": MIN_PASSWORD_LENGTH,
    }
    return page(request, "users.html", context, status_code=status_code)


_DONE = {
    "disabled": "{who} is disabled: signed out everywhere, tokens stopped, sign-in refused.",
    "enabled": "{who} may sign in again (their tokens work again too).",
    "reset": "{who}'s password is reset and every session of theirs has ended.",
}


@router.get("/admin/users")
async def users_page(
    request: Request,
    admin: AdminDep,
    services: ServicesDep,
    created: str | None = None,
    done: str | None = None,
    who: str = "",
) -> Response:
    notice = _DONE[done].format(who=who[:320]) if done in _DONE else None
    return await _users_page(request, services, created=created, notice=notice)


@router.post("/admin/users")
async def create_user(
    request: Request,
    admin: AdminDep,
    services: ServicesDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    role: Annotated[str, Form(max_length=16)] = "user",
) -> Response:
    chosen = Role.ADMIN if role == Role.ADMIN.value else Role.USER
    try:
        async with services.database.session() as db:
            user = await UserRepository(db).create(email, password, role=chosen)
    except EmpError as exc:
        form = {"email": email, "role": chosen.value}
        errors = {exc.field or "email": exc.message}
        return await _users_page(request, services, form=form, errors=errors, status_code=422)
    logger.info("admin %s created user %s (%s)", admin.email, user.email, user.role)
    return redirect(request, f"/admin/users?created={user.email}")


async def _end_access(services: Services, user_id: str, reason: str, *, tokens: bool) -> None:
    """End every session of the user (pages and sockets, in every process); with ``tokens``
    their API tokens stop too (a disabled user's tokens resolve to nothing)."""
    await services.sessions.end_all(user_id, reason)
    if tokens:
        revocation = Revocation(user_id=user_id, reason=reason)
        await publish(services.redis, services.queue.keys, revocation)


async def _change(
    services: Services,
    user_id: str,
    admin: Principal,
    change: Callable[[UserRepository, User], Awaitable[None]],
) -> User:
    """Apply ``change`` to another user, in one transaction; an admin never changes their own
    access here (they could lock every admin out)."""
    async with services.database.session() as db:
        users = UserRepository(db)
        user = await users.by_id(user_id)
        if user is None:
            raise NotFound("no such user")
        if user.id == admin.user_id:
            raise Conflict("you cannot do that to your own account; ask another admin")
        await change(users, user)
    return user


@router.post("/admin/users/{user_id}/disable")
async def disable_user(
    request: Request, user_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    user = await _change(services, user_id, admin, lambda users, u: users.set_disabled(u, True))
    await _end_access(services, user.id, "the account was disabled", tokens=True)
    logger.info("admin %s disabled user %s", admin.email, user.email)
    return redirect(request, f"/admin/users?done=disabled&who={user.email}")


@router.post("/admin/users/{user_id}/enable")
async def enable_user(
    request: Request, user_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    user = await _change(services, user_id, admin, lambda users, u: users.set_disabled(u, False))
    logger.info("admin %s enabled user %s", admin.email, user.email)
    return redirect(request, f"/admin/users?done=enabled&who={user.email}")


@router.post("/admin/users/{user_id}/password")
async def reset_password(
    request: Request,
    user_id: str,
    admin: AdminDep,
    services: ServicesDep,
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    try:
        user = await _change(
            services, user_id, admin, lambda users, u: users.set_password(u, password)
        )
    except InvalidInput as exc:
        errors = {f"reset-{user_id}": exc.message[:1].upper() + exc.message[1:] + "."}
        return await _users_page(request, services, errors=errors, status_code=422)
    await _end_access(services, user.id, "an admin reset the password", tokens=False)
    logger.info("admin %s reset the password of %s", admin.email, user.email)
    return redirect(request, f"/admin/users?done=reset&who={user.email}")
