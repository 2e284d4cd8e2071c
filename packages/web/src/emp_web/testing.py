"""What the API's and the studio's tests share: an app served by a real uvicorn on a free port, and
accounts (a user with a password and an API token) in a migrated database.

Not imported by the apps themselves; it lives here, beside the glue it serves, because apps may
not import each other and both test suites need it.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from pydantic import SecretStr
from starlette.types import ASGIApp

from emp_core.blobs.settings import BlobSettings
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue import ClaimedJob, Queue
from emp_core.redis.server import free_port
from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, Role, TokenRepository, UserRepository
from emp_web.logs import log_config
from emp_web.server import server_options
from emp_web.settings import WebSettings
from emp_web.webhooks.settings import WebhookSettings

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


T = TypeVar("T")


def small_pool(settings: QueueSettings, connections: int = 8) -> QueueSettings:
    """``settings`` with a Redis pool far smaller than the number of sockets a test opens."""
    return settings.model_copy(update={"redis_max_connections": connections})


async def crowd(
    follow: Callable[[asyncio.Event], Coroutine[Any, Any, T]], queue: Queue, sockets: int
) -> list[T]:
    """Start ``sockets`` followers of one pending job at once (``follow`` sets its event on its
    first frame), wait until every one has it, then take the job to its end (claimed, one
    progress, completed) and return what each follower saw."""
    opened = [asyncio.Event() for _ in range(sockets)]
    tasks = [asyncio.create_task(follow(event)) for event in opened]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 120)
    claimed = await claim(queue)
    await queue.progress(claimed, 40, "step 4 of 10")
    await queue.complete(claimed, {"text": "done"})
    return await asyncio.wait_for(asyncio.gather(*tasks), 120)


@contextmanager
def web_settings_for(
    queue: QueueSettings,
    database_url: str,
    *,
    webhooks: WebhookSettings | None = None,
    blobs: BlobSettings | None = None,
    blobs_url: str | None = None,
) -> Iterator[WebSettings]:
    """A test app's ``WebSettings``: the test's queue and database, webhooks without the
    dispatcher unless ``webhooks`` says otherwise, and blobs in a temporary folder (its signed
    URLs under ``blobs_url``) unless ``blobs`` names a store."""
    with tempfile.TemporaryDirectory(prefix="emp-test-blobs-") as folder:
        yield WebSettings(
            queue=queue,
            database=DatabaseSettings(database_url=database_url),
            webhooks=webhooks or WebhookSettings(run_dispatcher=False),
            blobs=blobs or BlobSettings(
                url=f"file://{folder}", signing_key=SecretStr("test-signing-key"),
                public_url=blobs_url,
            ),
        )  # fmt: skip
