"""What the API's and the studio's tests share: an app served by a real uvicorn on a free port, and
accounts (a user with a password and an API token) in a migrated database.

Not imported by the apps themselves; it lives here, beside the glue it serves, because apps may
not import each other and both test suites need it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue import ClaimedJob, Queue
from emp_core.redis.server import free_port
from emp_sql import Database, DatabaseSettings, Role, TokenRepository, UserRepository
from emp_web.logs import log_config
from emp_web.server import server_options

PASSWORD = "correct horse battery"  # noqa: S105 - the test accounts' password


@asynccontextmanager
async def serve(app: ASGIApp, *, head_timeout: float = 10.0) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free port in this event loop, as ``emp_web.server`` does
    (the head deadline, redacted logs); yields ``host:port``."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=2, **server_options(head_timeout),
        log_config=log_config("warning"),
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


@dataclass
class ServedApp:
    """A running app: the app (for its services) and where it listens."""

    app: Any
    host: str

    @property
    def base(self) -> str:
        return f"http://{self.host}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}"

    @property
    def services(self) -> Any:
        return self.app.state.services


@dataclass(frozen=True)
class Account:
    user_id: str
    email: str
    token: str
    token_id: str
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def create_account(database_url: str, *, name: str, admin: bool = False) -> Account:
    """A new user named ``name-<random>@example.com`` with ``PASSWORD`` and one API token."""
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
            role = Role.ADMIN if admin else Role.USER
            user = await UserRepository(session).create(email, PASSWORD, role=role)
            issued = await TokenRepository(session).issue(user, "tests")
        return Account(user.id, user.email, issued.secret, issued.token.id)
    finally:
        await db.dispose()


async def sample_accounts(database_url: str) -> dict[str, Account]:
    """alice and bob (users) and admin, the accounts the authorization tests play."""
    return {
        "alice": await create_account(database_url, name="alice"),
        "bob": await create_account(database_url, name="bob"),
        "admin": await create_account(database_url, name="admin", admin=True),
    }


async def claim(queue: Queue, *, service: str = "simulation") -> ClaimedJob:
    """Claim the next job as a fresh worker would."""
    caps = WorkerCapabilities(worker_id=f"w-{uuid.uuid4().hex[:6]}", services=[service])
    result = await queue.claim(caps)
    assert result.claimed is not None, "nothing to claim"
    return result.claimed
