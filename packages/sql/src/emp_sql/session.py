"""The SQL engine and session factory of one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from emp_core.security.sealing import Sealer
from emp_sql.data_key import load_sealer
from emp_sql.settings import DatabaseSettings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the one writer, which
    # matters when the API and the CLI share the dev database; busy_timeout waits out a lock
    # instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def ensure_sqlite_directory(url: URL) -> None:
    """Create the folder of a SQLite file (``.data/`` on a fresh checkout)."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    url = make_url(settings.database_url)
    # hide_parameters: a statement's bound values never reach an error text or the echo log
    # (they can be passwords' hashes, tokens' digests, a webhook secret before it is sealed).
    options: dict[str, Any] = {
        "echo": settings.database_echo, "pool_pre_ping": True, "hide_parameters": True,
    }  # fmt: skip
    if url.get_backend_name() == "sqlite":
        ensure_sqlite_directory(url)
    else:
        options["pool_size"] = settings.database_pool_size
    engine = create_async_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


class Database:
    """An engine and its session factory; build one per process and ``dispose`` it at exit."""

    def __init__(self, settings: DatabaseSettings | None = None) -> None:
        self.settings = settings or DatabaseSettings()
        self.engine = create_engine(self.settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed when the block ends, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @cached_property
    def sealer(self) -> Sealer:
        """Seals and opens the secrets stored here (``emp_sql.data_key``). Read on first use, so
        code that stores no secret needs no key; web apps read it at start and refuse to start
        without one."""
        return load_sealer(self.settings)

    async def ping(self) -> None:
        """Raise when the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
