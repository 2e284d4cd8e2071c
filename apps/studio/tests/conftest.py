"""Fixtures of the studio's tests: a SQLite database per module migrated with Alembic, three
accounts (two users and an admin), and a studio served by uvicorn per test on its own queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from studio_helpers import Studio, Visitor, running_studio

from emp_core.settings import QueueSettings
from emp_sql import DatabaseSettings, migrate
from emp_web.testing import Account, sample_accounts


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to the end on a thread of its own: a module fixture may be set up while
    an event loop already runs on this thread (pytest-asyncio's, Playwright's)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = Path(tmp_path_factory.mktemp("studio-db")) / "emp.db"
    url = f"sqlite+aiosqlite:///{path}"
    _run(migrate.upgrade(DatabaseSettings(database_url=url)))
    return url


@pytest.fixture(scope="module")
def accounts(database_url: str) -> dict[str, Account]:
    return _run(sample_accounts(database_url))


@pytest.fixture
async def studio(settings: QueueSettings, database_url: str) -> AsyncIterator[Studio]:
    async with running_studio(settings, database_url) as running:
        yield running


@pytest.fixture
async def visitor(studio: Studio) -> AsyncIterator[Visitor]:
    """A visitor nobody has signed in yet."""
    visitor = studio.visitor()
    try:
        yield visitor
    finally:
        await visitor.aclose()


@pytest.fixture
async def alice(studio: Studio, accounts: dict[str, Account]) -> AsyncIterator[Visitor]:
    visitor = studio.visitor()
    await visitor.sign_in(accounts["alice"])
    try:
        yield visitor
    finally:
        await visitor.aclose()


@pytest.fixture
async def bob(studio: Studio, accounts: dict[str, Account]) -> AsyncIterator[Visitor]:
    visitor = studio.visitor()
    await visitor.sign_in(accounts["bob"])
    try:
        yield visitor
    finally:
        await visitor.aclose()


@pytest.fixture
async def admin(studio: Studio, accounts: dict[str, Account]) -> AsyncIterator[Visitor]:
    visitor = studio.visitor()
    await visitor.sign_in(accounts["admin"])
    try:
        yield visitor
    finally:
        await visitor.aclose()
