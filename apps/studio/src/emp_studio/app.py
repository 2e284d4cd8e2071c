"""The FastAPI application: ``create_app()`` wires pages, sockets, the session, static files and
the error pages; uvicorn builds it with ``--factory``."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import Scope

from emp_studio import __version__, errors
from emp_studio.pages import (
    account,
    auth,
    dashboard,
    forensics,
    generate,
    health,
    job,
    jobs,
    loras,
    machine,
    machines,
    outputs,
    patterns,
    users,
    webhooks,
)
from emp_studio.settings import StudioSettings
from emp_studio.state import Services
from emp_web import logs
from emp_web.body import BodyGuard
from emp_web.headers import SecurityHeaders
from emp_web.services import lifespan
from emp_web.settings import WebSettings

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "emp_session"

# Scripts and styles come from our own static files only, so a job's payload or result shown on
# a page cannot run script even if escaping were ever missed; images may be data: URLs (results).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _secret(settings: StudioSettings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    logger.warning(
        "EMP_STUDIO_SECRET_KEY is not set: sessions are signed with a random key and end when "
        "this process stops"
    )
    return secrets.token_urlsafe(48)


def create_app(
    web: WebSettings | None = None, studio_settings: StudioSettings | None = None
) -> FastAPI:
    """The studio on ``web``'s queue and database (each part read from the environment when
    left out) with ``studio_settings`` (``EMP_STUDIO_*``)."""
    web = web or WebSettings()
    settings = studio_settings or StudioSettings()

    async def start() -> Services:
        return await Services.start(web, settings)

    app = FastAPI(
        title="EMP studio",
        version=__version__,
        lifespan=lifespan(start, ready=f"EMP studio {__version__} serving queue {web.queue.queue}"),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    errors.install(app)
    logs.install("uvicorn.access", "uvicorn.error")

    def refuse(scope: Scope, status: int, _code: str, message: str, _field: str | None) -> Response:
        if status == 413:
            message = "That form is larger than the studio takes."
        return errors.error_page(Request(scope), status, message)

    # Browsers always declare a form's length; refusing early spares parsing a huge body, and a
    # body that dribbles in is refused after a deadline.
    app.add_middleware(
        BodyGuard,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_seconds,
        refuse=refuse,
        # A LoRA upload streams and checks its own limit (EMP_LORA_MAX_BYTES).
        streamed=frozenset({loras.UPLOAD_PATH}),
    )
    # Added after the routes' middleware, so it runs before them: every page and socket sees the
    # session.
    app.add_middleware(
        SessionMiddleware,
        secret_key=_secret(settings),
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age_seconds,
        same_site="lax",
        https_only=settings.secure_cookie,
    )
    # Outermost, so that it sees the session's cookie too (Secure over HTTPS). Pages may hold
    # what only the signed-in viewer should see: never kept by a cache.
    app.add_middleware(
        SecurityHeaders, headers=_HEADERS, private=lambda path: not path.startswith("/static/")
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (
        health, auth, account, dashboard, generate, jobs, forensics, job, machine, outputs,
        users, patterns, webhooks, loras, machines,
    ):  # fmt: skip
        app.include_router(module.router)
    app.include_router(loras.uploads)
    app.include_router(dashboard.sockets)
    app.include_router(job.sockets)
    return app
