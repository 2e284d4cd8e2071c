"""``/health``: whether the studio can reach Redis and SQL. Needs no session (load balancers
and ``make dev`` ask it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from emp_studio import __version__
from emp_studio.deps import ServicesDep

router = APIRouter()

_TIMEOUT = 2.0


async def _check(probe: Awaitable[Any]) -> str:
    try:
        await asyncio.wait_for(probe, _TIMEOUT)
    except TimeoutError:
        return f"no answer within {_TIMEOUT:g} s"
    except (RedisError, SQLAlchemyError, OSError) as exc:
        return str(exc).splitlines()[0][:200] or type(exc).__name__
    return "ok"


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    redis, sql = await asyncio.gather(
        _check(services.redis.ping()), _check(services.database.ping())
    )
    checks = {"redis": redis, "sql": sql}
    ok = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ok else "unavailable", "version": __version__, "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503)
