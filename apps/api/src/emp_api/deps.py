"""Request dependencies: the process's services and the caller's identity.

Every route but ``/health`` and ``/version`` depends on ``current_principal`` (or
``admin_principal``); the bearer scheme declared here is what ``/docs`` offers to fill in.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from emp_api.state import Services
from emp_sql.auth import Principal, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="An API token from `emp tokens create`.")


# Async on purpose: FastAPI runs a plain ``def`` dependency on a worker thread, a thread hop per
# request on the hot path of submit.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthorized("the Authorization header must be `Bearer <token>`")
        raise Unauthorized("this needs a token: send `Authorization: Bearer <token>`")
    services: Services = request.app.state.services
    return await services.auth.authenticate(credentials.credentials)


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    principal.require_admin()
    return principal


def socket_token(websocket: WebSocket) -> str | None:
    """A WebSocket's token: the Authorization header, or the ``token`` query parameter for
    clients (browsers) that cannot set headers on a WebSocket."""
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return websocket.query_params.get("token") or None


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(admin_principal)]
