"""Fixtures of the API's tests: a migrated PostgreSQL database per module, three accounts per
module (two users and an admin), and the app served by uvicorn per test on its own queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from api_helpers import Account, Api, create_account, postgres_database, running_api

from emp_core.db import DatabaseSettings, migrate
from emp_core.settings import QueueSettings


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A PostgreSQL database of this module's own, built with `alembic upgrade head`."""
    with postgres_database() as url:
        asyncio.run(migrate.upgrade(DatabaseSettings(database_url=url)))
        yield url


@pytest.fixture(scope="module")
def accounts(database_url: str) -> dict[str, Account]:
    async def make() -> dict[str, Account]:
        return {
            "alice": await create_account(database_url, name="alice"),
            "bob": await create_account(database_url, name="bob"),
            "admin": await create_account(database_url, name="admin", admin=True),
        }

    return asyncio.run(make())


@pytest.fixture
async def api(settings: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    async with running_api(settings, database_url) as running:
        yield running
