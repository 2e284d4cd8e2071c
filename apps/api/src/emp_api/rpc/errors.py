"""Domain errors to gRPC status codes, in one place (as ``emp_api.errors`` does for HTTP).

The details string names the field first (``"payload_json: …"``), and trailing metadata carries
the stable code and the field (``emp-error-code``, ``emp-error-field``) for programs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from emp_core.errors import Conflict, EmpError, InvalidInput, NotFound, PayloadTooLarge
from emp_rpc.convert import proto_field
from emp_rpc.metadata import ERROR_CODE, ERROR_FIELD
from emp_sql.auth import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CODES: list[tuple[type[EmpError], grpc.StatusCode]] = [
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
]


def status_of(exc: EmpError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    if exc.status_code == 429:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT if exc.status_code < 500 else grpc.StatusCode.INTERNAL


async def abort(context: Any, exc: EmpError) -> NoReturn:
    field = proto_field(exc.field)
    message = exc.message if field is None or exc.message.startswith(field) else (
        f"{field}: {exc.message}"
    )  # fmt: skip
    context.set_trailing_metadata(((ERROR_CODE, exc.code), (ERROR_FIELD, field or "")))
    await context.abort(status_of(exc), message)
    raise AssertionError("unreachable")  # context.abort raises


async def guarded(context: Any, call: Callable[[], Awaitable[T]]) -> T:
    """Run one unary call, turning what it raises into a status."""
    try:
        return await call()
    except EmpError as exc:
        await abort(context, exc)
    except (RedisConnectionError, RedisTimeoutError, OperationalError, InterfaceError) as exc:
        logger.warning("gRPC call failed, a backend is unreachable: %s", exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "a backend is unreachable; retry")
    raise AssertionError("unreachable")


async def guarded_stream(context: Any, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """The same for a server stream: what it raises before or between messages."""
    try:
        async for item in stream:
            yield item
    except EmpError as exc:
        await abort(context, exc)
    except (RedisConnectionError, RedisTimeoutError, OperationalError, InterfaceError) as exc:
        logger.warning("gRPC stream failed, a backend is unreachable: %s", exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "a backend is unreachable; retry")
