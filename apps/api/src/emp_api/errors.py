"""Errors as JSON, in one place: ``{"error": {"code": …, "message": …, "field": …}}``.

Services raise ``EmpError`` subclasses (never ``HTTPException``); this maps them, request
validation errors, Starlette's own HTTP errors and lost dependencies onto that one shape.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from emp_core.errors import EmpError
from emp_web.errors import ErrorHandlers
from emp_web.ratelimit import RateLimited

logger = logging.getLogger(__name__)

# Where a request part sits is said by the first element of a validation error's location.
_PARTS = {"body", "query", "path", "header", "cookie"}


def error_response(
    status: int, code: str, message: str, field: str | None = None, **extra: Any
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"code": code, "message": message, "field": field}, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def refusal(_scope: Scope, status: int, code: str, message: str, field: str | None) -> Response:
    """An error answered by middleware, before any route (a body too large or too slow)."""
    return error_response(status, code, message, field)


class _JsonErrors(ErrorHandlers):
    async def emp_error(self, _request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EmpError)
        response = error_response(exc.status_code, exc.code, exc.message, exc.field)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    async def http_error(self, _request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        phrase = HTTPStatus(exc.status_code).phrase
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        message = exc.detail if isinstance(exc.detail, str) else phrase
        return error_response(exc.status_code, code, message)

    async def validation_error(self, _request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(part) for part in first.get("loc", ())]
        if loc and loc[0] in _PARTS:
            loc = loc[1:]
        field = ".".join(loc) or None
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"{field}: " if field else ""
        return error_response(422, "invalid_input", f"{where}{first['msg']}{more}", field)

    async def redis_down(self, _request: Request, exc: Exception) -> JSONResponse:
        logger.warning("a request failed because Redis is unreachable: %s", exc)
        return error_response(503, "unavailable", "redis is unavailable; retry shortly", "redis")

    async def sql_down(self, _request: Request, exc: Exception) -> JSONResponse:
        logger.warning("a request failed because the database is unreachable: %s", exc)
        return error_response(
            503, "unavailable", "the database is unavailable; retry shortly", "sql"
        )

    async def unexpected(self, _request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error", exc_info=exc)
        return error_response(500, "internal", "an internal error occurred; it has been logged")


def install(app: FastAPI) -> None:
    _JsonErrors().install(app)
