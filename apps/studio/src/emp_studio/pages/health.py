"""``/health``: whether the studio can reach Redis and SQL. Needs no session (load balancers
and ``make dev`` ask it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from emp_studio import __version__
from emp_studio.deps import ServicesDep
from emp_web.health import probe_backends

router = APIRouter()


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    checks = await probe_backends(services.redis, services.database)
    ok = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ok else "unavailable", "version": __version__, "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503)
