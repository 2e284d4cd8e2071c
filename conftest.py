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
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from emp_core.queue.queue import Queue
from emp_core.redis.client import connect
from emp_core.redis.server import LocalCluster, RedisServer
from emp_core.settings import QueueSettings

ROOT = Path(__file__).resolve().parent
AZURITE_BIN = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A connection string to a private Azurite blob service (started once per session)."""
    if conn := os.environ.get("EMP_TEST_AZURE_CONNECTION_STRING"):
        yield conn
        return
    binary = AZURITE_BIN if AZURITE_BIN.exists() else shutil.which("azurite-blob")
    if binary is None:
        pytest.fail("Azurite is not installed: run scripts/ensure-azurite.sh (make azurite)")
    port = _free_port()
    location = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [str(binary), "--silent", "--location", str(location), "--blobHost", "127.0.0.1",
         "--blobPort", str(port), "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    err = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"Azurite did not start on port {port}: {err}")
                time.sleep(0.05)
        yield (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
