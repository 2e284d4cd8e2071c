"""``/health`` and ``/version``: the two routes that need no token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

import emp_core
from emp_api import __version__
from emp_api.errors import error_response
from emp_api.schemas import ErrorResponse, HealthOut, VersionOut
from emp_api.state import Services
from emp_core.queue.functions import LIBRARY_VERSION
from emp_web.health import probe_backends

router = APIRouter(tags=["system"])


@router.get(
    "/health",
    response_model=HealthOut,
    summary="Redis and SQL reachable",
    responses={503: {"model": ErrorResponse, "description": "A dependency is unreachable"}},
)
async def health(request: Request) -> HealthOut | JSONResponse:
    """200 when Redis and the database answer; 503 naming the first that does not (in
    `error.field`), with every check's outcome in `checks`."""
    services: Services = request.app.state.services
    checks = await probe_backends(services.redis, services.database)
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        message = "; ".join(f"{name} is unavailable: {checks[name]}" for name in failed)
        return error_response(503, "unavailable", message, failed[0], checks=checks)
    return HealthOut(status="ok", checks=checks)


@router.get("/version", summary="Versions of this API, the core and the Lua library")
async def version() -> VersionOut:
    return VersionOut(api=__version__, core=emp_core.__version__, library=LIBRARY_VERSION)
