"""Which exceptions a web app maps to responses, registered in one place for both apps.

Each app renders its own bodies (JSON for the API, an HTML page for the studio); what they share
is the list of exceptions and what each means: a domain error, an HTTP error, a request that
failed validation, Redis or SQL unreachable (503, not 500), and anything else (500, logged).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from emp_core.errors import EmpError


class ErrorHandlers(ABC):
    """One app's responses to each kind of error; ``install`` registers them on the app."""

    @abstractmethod
    async def emp_error(self, request: Request, exc: Exception) -> Response: ...

    @abstractmethod
    async def http_error(self, request: Request, exc: Exception) -> Response: ...

    @abstractmethod
    async def validation_error(self, request: Request, exc: Exception) -> Response: ...

    @abstractmethod
    async def redis_down(self, request: Request, exc: Exception) -> Response: ...

    @abstractmethod
    async def sql_down(self, request: Request, exc: Exception) -> Response: ...

    @abstractmethod
    async def unexpected(self, request: Request, exc: Exception) -> Response: ...

    def install(self, app: FastAPI) -> None:
        app.add_exception_handler(EmpError, self.emp_error)
        app.add_exception_handler(RequestValidationError, self.validation_error)
        app.add_exception_handler(StarletteHTTPException, self.http_error)
        app.add_exception_handler(RedisConnectionError, self.redis_down)
        app.add_exception_handler(RedisTimeoutError, self.redis_down)
        app.add_exception_handler(OperationalError, self.sql_down)
        app.add_exception_handler(InterfaceError, self.sql_down)
        app.add_exception_handler(Exception, self.unexpected)
