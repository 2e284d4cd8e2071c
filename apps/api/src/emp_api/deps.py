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
from emp_web import tickets

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
    return await _authenticate(services, request, credentials.credentials)


async def _authenticate(
    services: Services, connection: Request | WebSocket, token: str | None, *,
    digest: str | None = None,
) -> Principal:  # fmt: skip
    """The token's principal. A token this process resolved moments ago passes at once; any
    other is looked up only while the caller's address is within its limit of failed tokens
    (each failure counts), so guessing tokens is slow and costs nothing on the hot path."""
    auth = services.auth
    if token and (known := auth.cached(token)) is not None:
        return known
    address = connection.client.host if connection.client else "unknown"
    rule = services.rules.token_failures
    await services.limiter.check(
        rule, address, message="Too many requests with a bad token from your address"
    )
    try:
        if digest is not None:
            return await auth.authenticate_digest(digest)
        return await auth.authenticate(token)
    except Unauthorized:
        await services.limiter.hit(rule, address)
        raise


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    principal.require_admin()
    return principal


def bearer(request: Request | WebSocket) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def socket_principal(websocket: WebSocket) -> Principal:
    """A WebSocket's caller: the Authorization header; else a single-use ``ticket`` (what
    browsers, which cannot set headers on a WebSocket, should use); else, for older clients,
    the ``token`` query parameter (redacted from the logs, but a URL is no place for it)."""
    services: Services = websocket.app.state.services
    if (token := bearer(websocket)) is not None:
        return await _authenticate(services, websocket, token)
    if (ticket := websocket.query_params.get("ticket")) is not None:
        digest = await tickets.redeem(services.redis, services.queue.keys, ticket)
        if digest is None:
            raise Unauthorized("the ticket is unknown, used or expired; ask for a new one")
        return await _authenticate(services, websocket, None, digest=digest)
    return await _authenticate(services, websocket, websocket.query_params.get("token") or None)


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(admin_principal)]
