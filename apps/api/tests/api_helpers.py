"""Helpers of the API's tests: PostgreSQL databases, accounts, a served app, a fake worker."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from emp_api.app import create_app
from emp_api.settings import ApiSettings
from emp_core.capabilities import WorkerCapabilities
from emp_core.db import Database, DatabaseSettings, Role, TokenRepository, UserRepository
from emp_core.queue import ClaimedJob, Queue
from emp_core.redis_server import free_port
from emp_core.settings import QueueSettings

POSTGRES_URL = os.environ.get(
    "EMP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the test server (its async URL); dropped afterwards."""
    name = f"emp_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(_libpq(POSTGRES_URL), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc}); "
            "run scripts/ensure-postgres.sh or set EMP_TEST_POSTGRES_URL",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Account:
    user_id: str
    email: str
    token: str
    token_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def create_account(database_url: str, *, name: str, admin: bool = False) -> Account:
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
            role = Role.ADMIN if admin else Role.USER
            user = await UserRepository(session).create(email, "correct horse", role=role)
            issued = await TokenRepository(session).issue(user, "tests")
        return Account(user.id, user.email, issued.secret, issued.token.id)
    finally:
        await db.dispose()


@dataclass
class Api:
    """A running app: its base URLs, an HTTP client and the app (for its services)."""

    app: FastAPI
    http: httpx.AsyncClient
    host: str

    @property
    def ws(self) -> str:
        return f"ws://{self.host}"

    @property
    def services(self) -> Any:
        return self.app.state.services


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free port in this event loop; yields ``host:port``."""
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
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def running_api(
    settings: QueueSettings, database_url: str, **api_options: Any
) -> AsyncIterator[Api]:
    options = {"auth_cache_seconds": 0.0, "archive_catch_up_seconds": 0.5, **api_options}
    app = create_app(
        queue_settings=settings,
        database_settings=DatabaseSettings(database_url=database_url),
        api_settings=ApiSettings(**options),
    )
    async with serve(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        yield Api(app, http, host)


async def claim(queue: Queue, *, service: str = "simulation") -> ClaimedJob:
    """Claim the next job as a fresh worker would."""
    caps = WorkerCapabilities(worker_id=f"w-{uuid.uuid4().hex[:6]}", services=[service])
    result = await queue.claim(caps)
    assert result.claimed is not None, "nothing to claim"
    return result.claimed


def job_body(**overrides: Any) -> dict[str, Any]:
    return {"service": "simulation", "payload": {"steps": 3}, **overrides}
