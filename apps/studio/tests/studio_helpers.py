"""Helpers of the studio's tests: a migrated SQLite database, accounts, a served studio, and a
visitor-like client that signs in and carries the CSRF token."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from emp_core.capabilities import WorkerCapabilities
from emp_core.db import Database, DatabaseSettings, Role, UserRepository
from emp_core.queue import ClaimedJob, Queue
from emp_core.redis_server import free_port
from emp_core.settings import QueueSettings
from emp_studio.app import SESSION_COOKIE, create_app
from emp_studio.settings import StudioSettings

PASSWORD = "correct horse battery"
SECRET = "k" * 16 + uuid.uuid4().hex
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Account:
    user_id: str
    email: str
    password: str = PASSWORD


async def create_account(database_url: str, *, name: str, admin: bool = False) -> Account:
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            email = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
            role = Role.ADMIN if admin else Role.USER
            user = await UserRepository(session).create(email, PASSWORD, role=role)
        return Account(user.id, user.email)
    finally:
        await db.dispose()


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


@dataclass
class Studio:
    """A running studio: its app (for its services) and where it listens."""

    app: FastAPI
    host: str

    @property
    def base(self) -> str:
        return f"http://{self.host}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}"

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
    settings: QueueSettings, database_url: str, **options: Any
) -> AsyncIterator[Studio]:
    studio_settings = StudioSettings(
        secret_key=SecretStr(SECRET),
        dashboard_min_interval_seconds=0.05,
        dashboard_idle_seconds=0.5,
        **options,
    )
    app = create_app(
        queue_settings=settings,
        database_settings=DatabaseSettings(database_url=database_url),
        studio_settings=studio_settings,
    )
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped during start-up")
        await asyncio.sleep(0.01)
    try:
        yield Studio(app, f"127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await task


async def claim(queue: Queue, *, service: str = "simulation") -> ClaimedJob:
    """Claim the next job as a fresh worker would."""
    caps = WorkerCapabilities(worker_id=f"w-{uuid.uuid4().hex[:6]}", services=[service])
    result = await queue.claim(caps)
    assert result.claimed is not None, "nothing to claim"
    return result.claimed


def job_form(**overrides: Any) -> dict[str, Any]:
    """The submit form as a visitor sends it, with a quick simulation job."""
    return {
        "service": "simulation",
        "priority": "50",
        "max_attempts": "3",
        "payload": '{"steps": 3}',
        **overrides,
    }
