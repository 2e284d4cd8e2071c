"""Helpers of the studio's tests: a migrated SQLite database, accounts, a served studio, and a
visitor-like client that signs in and carries the CSRF token."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from emp_core.settings import QueueSettings
from emp_studio.app import SESSION_COOKIE, create_app
from emp_studio.settings import StudioSettings
from emp_web.testing import (
    Account,
    ServedApp,
    serve,
    web_settings_for,
)
from emp_web.webhooks.settings import WebhookSettings

SECRET = "k" * 16 + uuid.uuid4().hex
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


@dataclass
class Studio(ServedApp):
    """A running studio; ``visitor()`` opens a browser-like client."""

    def visitor(self) -> Visitor:
        return Visitor(httpx.AsyncClient(base_url=self.base, follow_redirects=False), self)


@dataclass
class Visitor:
    """One visitor: cookies kept between requests, the CSRF token read off the pages."""

    http: httpx.AsyncClient
    studio: Studio
    csrf: str = ""

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.get(url, **kwargs)
        if "csrf_token" in response.text:
            self.csrf = csrf_of(response.text)
        return response

    async def post(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        body = {"csrf_token": self.csrf, **(data or {})}
        return await self.http.post(url, data=body, **kwargs)

    async def sign_in(self, account: Account) -> httpx.Response:
        await self.get("/signin")
        response = await self.post(
            "/signin", {"email": account.email, "password": account.password}
        )
        assert response.status_code == 303, response.text
        await self.get("/")
        return response

    @property
    def cookie_header(self) -> str:
        return f"{SESSION_COOKIE}={self.http.cookies.get(SESSION_COOKIE)}"

    async def aclose(self) -> None:
        await self.http.aclose()


@asynccontextmanager
async def running_studio(
    settings: QueueSettings,
    database_url: str,
    *,
    webhooks: WebhookSettings | None = None,
    **options: Any,
) -> AsyncIterator[Studio]:
    studio_settings = StudioSettings(
        **{
            "secret_key": SecretStr(SECRET),
            "dev": True,  # plain HTTP: httpx sends no Secure cookie over it
            "dashboard_min_interval_seconds": 0.05,
            "dashboard_idle_seconds": 0.5,
            **options,
        }
    )
    # Signed blob URLs point where an API would serve them.
    blobs_url = "http://127.0.0.1:9/blobs"
    with web_settings_for(settings, database_url, webhooks=webhooks, blobs_url=blobs_url) as web:
        app = create_app(web, studio_settings)
        async with serve(app) as host:
            yield Studio(app, host)


def job_form(**overrides: Any) -> dict[str, Any]:
    """The submit form as a visitor sends it, with a quick simulation job."""
    return {
        "service": "simulation",
        "priority": "50",
        "max_attempts": "3",
        "payload": '{"steps": 3}',
        **overrides,
    }
