"""Fixtures shared by every package's tests: a real Redis, a queue with keys of its own, Azurite.

Redis is a private ``redis-server`` on a free port started once per session, unless
``EMP_TEST_REDIS_URL`` names one (for a CI service container, say). Each test gets its own queue
name, so its keys never meet another test's and tests can run in parallel.

Azurite (the Azure Storage emulator, installed into ``.tools/azurite`` by
``scripts/ensure-azurite.sh``) is started once per session on a free port by the first test that
asks for ``azurite_connection_string``, unless ``EMP_TEST_AZURE_CONNECTION_STRING`` names one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from emp_core.blobs.emulator import Azurite, AzuriteError
from emp_core.blobs.emulator import binary as azurite_binary
from emp_core.queue.queue import Queue
from emp_core.redis.client import connect
from emp_core.redis.server import LocalCluster, RedisServer
from emp_core.settings import QueueSettings

ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def redis_url(redis_node_url: str) -> str:
    """The Redis the tests use; one node unless a suite overrides it (the core's runs twice)."""
    return redis_node_url


@pytest.fixture(scope="session")
def redis_node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("EMP_TEST_REDIS_URL"):
        yield url
        return
    server = RedisServer(Path(tmp_path_factory.mktemp("redis"))).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real local Redis Cluster (three primaries, ``redis+cluster://``), started once per
    session on first use, unless ``EMP_TEST_REDIS_CLUSTER_URL`` names one."""
    if url := os.environ.get("EMP_TEST_REDIS_CLUSTER_URL"):
        yield url
        return
    with LocalCluster(Path(tmp_path_factory.mktemp("cluster")), primaries=3) as cluster:
        yield cluster.url


@pytest.fixture(scope="session", params=["node", "cluster"])
def redis_url_both(request: pytest.FixtureRequest) -> str:
    """One node, then a real Redis Cluster: a suite whose ``redis_url`` returns this runs on
    both shapes (the core's queue tests, the worker crash test). One suite, not a copy."""
    name = "redis_cluster_url" if request.param == "cluster" else "redis_node_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def settings(redis_url: str) -> QueueSettings:
    """Settings for a queue no other test uses."""
    return QueueSettings(redis_url=redis_url, queue=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def queue(redis: aioredis.Redis, settings: QueueSettings) -> Queue:
    q = Queue(redis, settings)
    await q.functions.load()
    return q


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A connection string to a private Azurite blob service (started once per session)."""
    if conn := os.environ.get("EMP_TEST_AZURE_CONNECTION_STRING"):
        yield conn
        return
    executable = azurite_binary(ROOT)
    if executable is None:
        pytest.fail("Azurite is not installed: run scripts/ensure-azurite.sh (make azurite)")
    try:
        azurite = Azurite(tmp_path_factory.mktemp("azurite"), executable).start()
    except AzuriteError as exc:
        pytest.fail(str(exc))
    try:
        yield azurite.connection_string
    finally:
        azurite.stop()
