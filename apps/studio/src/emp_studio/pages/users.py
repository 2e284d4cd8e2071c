"""Admins: the people who may sign in, and a form to add one."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from emp_core.errors import EmpError
from emp_sql.models import Role
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
        "min_password": MIN_PASSWORD_LENGTH,
    }
    return page(request, "users.html", context, status_code=status_code)


@router.get("/admin/users")
async def users_page(
    request: Request, admin: AdminDep, services: ServicesDep, created: str | None = None
) -> Response:
    return await _users_page(request, services, created=created)


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
