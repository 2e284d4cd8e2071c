"""The FastAPI application: ``create_app()`` wires routes, errors, limits and the process's
services; uvicorn builds it with ``--factory``."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from emp_api import (
    __version__,
    admin,
    blobs,
    error_patterns,
    errors,
    health,
    jobs,
    loras,
    operations,
    webhooks,
    ws,
)  # fmt: skip
from emp_api.background import Background
from emp_api.rpc.server import RpcServer
from emp_api.settings import ApiSettings
from emp_api.state import Services
from emp_core.jobs import jsonvalue
from emp_core.telemetry import setup_telemetry
from emp_sql.webhook_secrets import seal_stored
from emp_web import logs
from emp_web.body import BodyGuard
from emp_web.headers import SecurityHeaders
from emp_web.services import lifespan
from emp_web.settings import WebSettings

logger = logging.getLogger(__name__)

DESCRIPTION = """
Jobs over REST and WebSocket. Every route except `/health` and `/version` needs
`Authorization: Bearer <token>` (create one with `emp tokens create --email …`).
Errors are `{"error": {"code", "message", "field"}}`.
"""

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def create_app(web: WebSettings | None = None, api_settings: ApiSettings | None = None) -> FastAPI:
    """The API on ``web``'s queue and database (each part read from the environment when left
    out) with ``api_settings`` (``EMP_API_*``)."""
    web = web or WebSettings()
    api_settings = api_settings or ApiSettings()
    # ADR-003: the heartbeat, job metrics and traces; exported only when OTEL_* configures it.
    telemetry = setup_telemetry("emp-api")

    async def start_background(app: FastAPI, services: Services) -> None:
        # Rows from before sealing (or under a key being retired) are sealed with the current
        # data key before anything sends a delivery; idempotent, so every process may run it.
        await seal_stored(services.database)
        app.state.background = Background(services)
        app.state.background.start()
        app.state.rpc = None
        if api_settings.grpc_port is not None:
            app.state.rpc = RpcServer(services, api_settings)
            app.state.grpc_port = await app.state.rpc.start()

    async def stop_background(app: FastAPI) -> None:
        if app.state.rpc is not None:
            await app.state.rpc.stop()
        await app.state.background.stop()

    async def start() -> Services:
        return await Services.start(web, api_settings, telemetry)

    app = FastAPI(
        title="EMP API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan(
            start,
            ready=f"EMP API {__version__} serving queue {web.queue.queue}",
            after_start=start_background,
            before_stop=stop_background,
        ),
        docs_url="/docs" if api_settings.docs else None,
        openapi_url="/openapi.json" if api_settings.docs else None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry spans, metrics and logs per request: about a fifth of the
        # submit throughput even with no exporter configured, so off unless asked for.
        telemetry={
            "tracing": api_settings.telemetry,
            "metrics": api_settings.telemetry,
            "logs": api_settings.telemetry,
        },
    )
    if telemetry.exporting:
        # A span per request from opentelemetry-instrumentation-fastapi, parent of job.submit.
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            excluded_urls="health,version",
        )
    errors.install(app)
    logs.install("uvicorn.access", "uvicorn.error")
    # /docs is Swagger UI's page (scripts from its CDN); everything else is JSON, which needs
    # nothing a policy could allow.
    app.add_middleware(
        SecurityHeaders, headers=_HEADERS, skip=lambda path: path in ("/docs", "/redoc")
    )
    # Our own limit, not FastAPI's ``max_body_size``: that one answers a declared oversized body
    # with plain text, and every error here is JSON. A body is the job spec, one level above its
    # payload, hence the depth of one more than the payload's limit.
    app.add_middleware(
        BodyGuard,
        max_bytes=api_settings.max_body_bytes,
        timeout_s=api_settings.body_timeout_seconds,
        refuse=errors.refusal,
        json_depth=jsonvalue.MAX_DEPTH + 1,
        # A LoRA upload streams through its own checks (EMP_LORA_MAX_BYTES, an idle timeout).
        streamed=frozenset({"/api/loras"}),
    )
    for module in (health, operations, jobs, loras, admin, error_patterns, webhooks, ws, blobs):
        app.include_router(module.router)
    return app
