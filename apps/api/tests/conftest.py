"""Fixtures of the API's tests: a migrated PostgreSQL database per module, three accounts per
module (two users and an admin), the app served by uvicorn per test on its own queue, and a
``WorkerService`` client of it (``stub``, for a module whose ``api`` serves gRPC)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from api_helpers import Api, postgres_database, running_api

from emp.v1 import worker_pb2_grpc
from emp_core.settings import QueueSettings
from emp_sql import DatabaseSettings, migrate
from emp_web.testing import Account, sample_accounts


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A PostgreSQL database of this module's own, built with `alembic upgrade head`."""
    with postgres_database() as url:
        asyncio.run(migrate.upgrade(DatabaseSettings(database_url=url)))
        yield url


@pytest.fixture(scope="module")
def accounts(database_url: str) -> dict[str, Account]:
    return asyncio.run(sample_accounts(database_url))


@pytest.fixture
async def api(settings: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    async with running_api(settings, database_url) as running:
        yield running


@pytest.fixture
async def stub(api: Api) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.app.state.grpc_port}") as channel:
        yield worker_pb2_grpc.WorkerServiceStub(channel)
