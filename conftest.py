"""Fixtures shared by every package's tests: a real Redis, a queue with keys of its own, Azurite.

Redis is a private ``redis-server`` on a free port started once per session, unless
``EMP_TEST_REDIS_URL`` names one (for a CI service container, say). Each test gets its own queue
name, so its keys never meet another test's and tests can run in parallel.

``EMP_DATA_KEY`` is set for the session (see below).

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
from emp_core.security.sealing import DATA_KEY_ENV, Sealer
from emp_core.settings import QueueSettings

ROOT = Path(__file__).resolve().parent

# A web app on PostgreSQL refuses to start without a data key (production does too): the tests
# hold one per session, in the environment, so apps they start in subprocesses have it as well.
# Tests of the key's own rules remove it (monkeypatch.delenv).
os.environ.setdefault(DATA_KEY_ENV, Sealer.generate("test").ring.current.encode())


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
def routed(settings: QueueSettings) -> QueueSettings:
    """The test's settings with two queues: ``simulation`` jobs go to ``{queue}-sim``, every
    other service to the test's queue (``EMP_QUEUE_ROUTES``)."""
    return settings.model_copy(update={"queue_routes": {"simulation": f"{settings.queue}-sim"}})


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


class FileServer:
    """A real HTTP server on a free port serving bytes by path, for download tests (the LoRA
    cache). ``files[path] = bytes``; ``cut[path] = n`` sends the full Content-Length but only the
    first n bytes and then drops the connection; ``gate`` (a threading.Event), when set on the
    server, holds every response after its headers until it is set; ``hits`` counts GETs by path.
    A path not in ``files`` is 404."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        self.gate: threading.Event | None = None
        self.started = threading.Event()  # set when a held response has sent its headers
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                body = server.files.get(path)
                if body is None:
                    self.send_error(404, "no such blob")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                limit = server.cut.get(path, len(body))
                half = body[: min(limit, len(body) // 2)]
                self.wfile.write(half)
                self.wfile.flush()
                if server.gate is not None:
                    server.started.set()
                    server.gate.wait(30)
                self.wfile.write(body[len(half) : limit])
                self.wfile.flush()
                if limit < len(body):
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=lambda: self._httpd.serve_forever(0.05), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    try:
        yield server
    finally:
        server.close()
