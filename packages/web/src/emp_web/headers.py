"""Security headers on every HTTP response of a web app, in one pure ASGI middleware.

Each app names its own headers (the studio a content security policy for its pages, the API one
that forbids everything a JSON body never needs). On top of those: ``Cache-Control: no-store``
wherever the app says responses are private (signed-in pages, every API answer), so a shared
computer's back button or a proxy never shows them to the next person; and, for a request that
came over HTTPS (uvicorn's ``--proxy-headers`` behind a TLS proxy), ``Strict-Transport-Security``
and the ``Secure`` flag on every cookie set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = "max-age=31536000; includeSubDomains"


class SecurityHeaders:
    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: Mapping[str, str],
        private: Callable[[str], bool] = lambda _path: True,
        skip: Callable[[str], bool] = lambda _path: False,
    ) -> None:
        self.app = app
        self.headers = dict(headers)
        self.private = private
        self.skip = skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if not self.skip(path):
                    for name, value in self.headers.items():
                        headers.setdefault(name, value)
                if self.private(path):
                    headers["Cache-Control"] = "no-store"
                if https:
                    headers.setdefault("Strict-Transport-Security", HSTS)
                    _secure_cookies(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secure_cookies(headers: MutableHeaders) -> None:
    cookies = headers.getlist("set-cookie")
    if not cookies or all("secure" in c.lower() for c in cookies):
        return
    del headers["set-cookie"]
    for cookie in cookies:
        headers.append("set-cookie", cookie if "secure" in cookie.lower() else f"{cookie}; secure")
