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
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from emp_core.errors import EmpError

logger = logging.getLogger(__name__)

# Where a request part sits is said by the first element of a validation error's location.
_PARTS = {"body", "query", "path", "header", "cookie"}


def error_response(
    status: int, code: str, message: str, field: str | None = None, **extra: Any
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"code": code, "message": message, "field": field}, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


async def _emp_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EmpError)
    return error_response(exc.status_code, exc.code, exc.message, exc.field)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
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


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    message = exc.detail if isinstance(exc.detail, str) else phrase
    return error_response(exc.status_code, code, message)


async def _redis_down(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("a request failed because Redis is unreachable: %s", exc)
    return error_response(503, "unavailable", "redis is unavailable; retry shortly", "redis")


async def _sql_down(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("a request failed because the database is unreachable: %s", exc)
    return error_response(503, "unavailable", "the database is unavailable; retry shortly", "sql")


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "internal", "an internal error occurred; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(EmpError, _emp_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)
    app.add_exception_handler(OperationalError, _sql_down)
    app.add_exception_handler(InterfaceError, _sql_down)
    app.add_exception_handler(Exception, _unexpected)
