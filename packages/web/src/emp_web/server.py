"""Serving a web app with uvicorn from its console script: flags over settings, logging that
includes our own loggers and redacts secrets, and a deadline on each request's head."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Protocol

import uvicorn
from starlette.types import Message
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from emp_web.logs import log_config


class ServerSettings(Protocol):
    host: str
    port: int
    log_level: str
    header_timeout_seconds: float


class _HeadDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head (request line and
    headers) has not arrived within ``head_timeout`` of the connection or of the request's first
    byte. uvicorn has no such timeout of its own: its keep-alive timer stops at the first byte,
    so a client sending one header byte at a time could hold a connection for ever."""

    head_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def http_protocol(head_timeout: float) -> type[HttpToolsProtocol]:
    """The HTTP protocol class to give uvicorn (``http=``): httptools with a head deadline."""
    return type("HeadDeadlineHttp", (_HeadDeadline,), {"head_timeout": head_timeout})


class QuietDenialWebSockets(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol without one false alarm: after the app refuses a handshake
    with an HTTP response (an API socket without a valid token gets the usual JSON error),
    uvicorn 0.54 logs "ASGI callable returned without completing handshake." at ERROR, so anyone
    could fill the error log by knocking. The response *is* the completed handshake; say so.
    The refusal itself is logged by the app, at INFO, with its reason."""

    async def send(self, message: Message) -> None:  # type: ignore[override]
        await super().send(message)  # type: ignore[arg-type]
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True


def server_options(head_timeout: float) -> dict[str, Any]:
    """The protocol classes every EMP web server runs with (uvicorn's ``http`` and ``ws``)."""
    return {"http": http_protocol(head_timeout), "ws": QuietDenialWebSockets}


def run(
    factory: str,
    settings: ServerSettings,
    *,
    prog: str,
    description: str | None,
    logger: str,
    processes: int | None = None,
    argv: list[str] | None = None,
    **uvicorn_options: Any,
) -> None:
    """Parse ``--host``, ``--port``, ``--log-level`` (and ``--processes`` where ``processes`` is
    given) with ``settings`` as defaults, then serve ``factory`` (``"module:create_app"``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    if processes is not None:
        parser.add_argument("--processes", type=int, default=processes)
    parser.add_argument("--log-level", default=settings.log_level)
    args = parser.parse_args(argv)
    uvicorn.run(
        factory,
        factory=True,
        host=args.host,
        port=args.port,
        workers=getattr(args, "processes", None),
        log_level=args.log_level,
        log_config=log_config(args.log_level, logger),
        **server_options(settings.header_timeout_seconds),
        **uvicorn_options,
    )
