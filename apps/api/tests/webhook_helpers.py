"""A real HTTP receiver for webhook tests (stdlib ``http.server`` on a thread, a free port), and
waiting for a delivery to settle."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from emp_web.webhooks.settings import WebhookSettings

T = TypeVar("T")

# Loopback allowed, plain http allowed, fast retries: a test's receiver is on 127.0.0.1.
LOCAL = {"allow_networks": "127.0.0.0/8", "allow_http": True}


def local_settings(**overrides: Any) -> WebhookSettings:
    options = {
        **LOCAL, "backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.2, "poll_seconds": 0.05,
        "timeout_seconds": 2.0, "lease_seconds": 5.0, **overrides,
    }  # fmt: skip
    return WebhookSettings(**options)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers ``fail_first`` requests with 500, then ``status``. ``hang_first`` requests are
    held until ``release`` is set; ``body_bytes`` sends a response body that long; ``redirect``
    answers 302 to another URL."""

    fail_first: int = 0
    status: int = 200
    hang_first: int = 0
    delay_s: float = 0.0
    body_bytes: int = 0
    redirect: str | None = None
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length)
        self.received.append(Received(request.path, dict(request.headers.items()), body))
        n = len(self.received)
        if n <= self.hang_first:
            self.release.wait(30)
        if self.delay_s:
            self.release.wait(self.delay_s)
        if self.redirect is not None:
            request.send_response(302)
            request.send_header("Location", self.redirect)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        status = 500 if n <= self.fail_first else self.status
        request.send_response(status)
        request.send_header("Content-Length", str(self.body_bytes))
        request.end_headers()
        chunk = b"x" * 65536
        try:
            left = self.body_bytes
            while left > 0:
                request.wfile.write(chunk[:left])
                left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


async def eventually(check: Callable[[], Awaitable[T | None]], *, tries: int = 400) -> T:
    """Poll ``check`` until it returns something truthy (bounded by tries, not by a clock)."""
    for _ in range(tries):
        if value := await check():
            return value
        await asyncio.sleep(0.025)
    raise AssertionError("the condition never held")
