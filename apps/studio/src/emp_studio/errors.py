"""Errors as pages, in one place.

Services raise ``EmpError`` subclasses; this turns them, Starlette's own HTTP errors and lost
dependencies into an error page with the right status. An htmx request gets a small notice
instead, retargeted (``HX-Retarget``) into the page's notice area, so a failed click says so
without replacing the part of the page it came from. Signing in is a redirect, not an error.
"""

from __future__ import annotations

import contextlib
import logging
from http import HTTPStatus
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from emp_core.errors import EmpError
from emp_studio.render import is_htmx, page, redirect, sentence
from emp_studio.session import SignInRequired, signed_in
from emp_web.errors import ErrorHandlers

logger = logging.getLogger(__name__)

_TITLES = {
    400: "That request did not make sense",
    403: "You may not open this page",
    404: "Not found",
    405: "Not allowed",
    409: "That cannot be done now",
    413: "That is too large",
    422: "That input does not parse",
    500: "Something went wrong",
    503: "The studio cannot reach its data",
}


def error_page(request: Request, status: int, message: str) -> Response:
    title = _TITLES.get(status) or HTTPStatus(status).phrase
    message = sentence(message)
    if is_htmx(request):
        headers = {"HX-Retarget": "#notices", "HX-Reswap": "beforeend"}
        notice = {"title": title, "message": message, "kind": "error"}
        return page(request, "_notice.html", notice, status_code=status, headers=headers)
    context: dict[str, object] = {"status": status, "title": title, "message": message}
    return page(request, "error.html", context, status_code=status)


async def _remember_viewer(request: Request) -> None:
    """An unknown URL matched no route, so no dependency looked at the session: look here, so
    that a signed-in person's error page has their navigation, not a "Sign in" button."""
    if "session" not in request.scope or getattr(request.state, "viewer", None) is not None:
        return
    with contextlib.suppress(Exception):  # an error page must render even when SQL is down
        services = request.app.state.services
        request.state.viewer = await signed_in(request.session, services)


async def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return redirect(request, f"/signin?next={quote(exc.next_url, safe='/')}")


class _PageErrors(ErrorHandlers):
    async def emp_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EmpError)
        return error_page(request, exc.status_code, exc.message)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            await _remember_viewer(request)
            return error_page(request, 404, "There is no page at this address.")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_page(request, exc.status_code, message)

    async def validation_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return error_page(request, 400, f"{where}: {first['msg']}" if where else str(first["msg"]))

    async def redis_down(self, request: Request, exc: Exception) -> Response:
        logger.warning("a page failed because Redis is unreachable: %s", exc)
        return error_page(request, 503, "The queue (Redis) is not answering. Try again shortly.")

    async def sql_down(self, request: Request, exc: Exception) -> Response:
        logger.warning("a page failed because the database is unreachable: %s", exc)
        return error_page(request, 503, "The database is not answering. Try again shortly.")

    async def unexpected(self, request: Request, exc: Exception) -> Response:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_page(request, 500, "An internal error occurred; it has been logged.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(SignInRequired, _sign_in)
    _PageErrors().install(app)
