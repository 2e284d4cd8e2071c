"""Request dependencies: the process's services, the signed-in viewer, and the CSRF check.

Every page but the sign-in page and ``/health`` depends on ``current_viewer`` (or
``admin_viewer``); every router of pages depends on ``verify_csrf``, which lets safe methods
through and checks the token on everything else, so no new form can forget it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from emp_sql.auth import Forbidden, Principal
from emp_studio.session import CSRF_FIELD, CSRF_HEADER, SignInRequired, check_csrf, signed_in
from emp_studio.state import Services

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def current_viewer(request: Request) -> Principal:
    services: Services = request.app.state.services
    viewer = await signed_in(request.session, services)
    if viewer is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target)
    # Error pages raised later in the request still show the navigation of a signed-in user.
    request.state.viewer = viewer
    return viewer


async def admin_viewer(viewer: Annotated[Principal, Depends(current_viewer)]) -> Principal:
    if not viewer.is_admin:
        raise Forbidden("this page is for admins")
    return viewer


async def verify_csrf(request: Request) -> None:
    if request.method in _SAFE_METHODS:
        return
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None:
        # Starlette caches the parsed form on the request, so the route reads it again for free.
        value = (await request.form()).get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    check_csrf(request.session, submitted)


ServicesDep = Annotated[Services, Depends(get_services)]
ViewerDep = Annotated[Principal, Depends(current_viewer)]
AdminDep = Annotated[Principal, Depends(admin_viewer)]
