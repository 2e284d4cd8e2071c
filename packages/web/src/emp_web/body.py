"""The request body guard both web apps put in front of their routes: a body must arrive within a
deadline, stay under a size, and (JSON) nest no deeper than the queue takes.

A declared ``Content-Length`` over the limit is refused at once. Otherwise the body is read here,
whole, before the app sees it: refused with 413 as soon as it passes the limit, with 408 when it
has not all arrived within ``timeout_s`` (a client dribbling a body must not hold a request open
forever), and with 422 naming the field when it is JSON nested deeper than ``json_depth``, which
Python's recursive JSON parser would otherwise meet as a ``RecursionError``. The app then reads
the body from memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emp_core.jobs import jsonvalue

# (scope, status, code, message, field) -> the app's own error response
Refuse = Callable[[Scope, int, str, str, str | None], Response]


class BodyGuard:
    """Pure ASGI middleware: one ``receive`` call on the common path (a small declared body)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout_s: float,
        refuse: Refuse,
        json_depth: int | None = None,
        streamed: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        # Paths whose routes read their body as a stream and guard it themselves (uploads of up
        # to gigabytes, which must not be read whole here).
        self.streamed = streamed
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.refuse = refuse
        self.json_depth = json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.streamed:
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        is_json = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-type":
                is_json = b"json" in value.lower()
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        if not chunked and (length is None or int(length) == 0):
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            message = f"the request body did not arrive within {self.timeout_s:g} s"
            response = self.refuse(scope, 408, "request_timeout", message, "body")
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        if body is None:
            await self._too_large(scope, receive, send)
            return
        if is_json and self.json_depth is not None:
            key = jsonvalue.too_deep(body, self.json_depth)
            if key is not None:
                field = key or "body"
                message = f"{field}: is nested deeper than {jsonvalue.MAX_DEPTH} levels"
                await self.refuse(scope, 422, "invalid_input", message, field)(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is over {self.max_bytes:,} bytes"
        await self.refuse(scope, 413, "payload_too_large", message, "body")(scope, receive, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` first, then whatever comes next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
