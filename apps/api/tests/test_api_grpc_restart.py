"""A gRPC worker's registry entry, which the API process holding its stream writes, comes back
as soon as a restarted Redis answers (a Redis without persistence returns empty), not at the
next refresh: the stream's control channel losing Redis is the signal, as for a Redis worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from api_helpers import Api, running_api
from grpc_helpers import Stream, ended, hello
from redis.exceptions import RedisError

from emp.v1 import worker_pb2_grpc
from emp_api.rpc import worker_session
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings
from emp_web.testing import Account


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to restart (without persistence: it returns empty)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def api(
    redis_server: RedisServer, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Api]:
    # A refresh interval longer than the test: only the prompt refresh can pass it.
    monkeypatch.setattr(worker_session, "_REGISTRY_REFRESH_S", 60.0)
    settings = QueueSettings(redis_url=redis_server.url, queue=f"t{uuid.uuid4().hex[:12]}")
    async with running_api(settings, database_url, grpc_port=0) as running:
        yield running


async def test_a_grpc_workers_entry_comes_back_after_a_redis_restart(
    api: Api, redis_server: RedisServer, accounts: dict[str, Account], tmp_path: Path
) -> None:
    services = api.app.state.services
    key = services.queue.keys.worker("grpc-restart")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.app.state.grpc_port}") as channel:
        worker = Stream(worker_pb2_grpc.WorkerServiceStub(channel), accounts["admin"].token)
        worker.send(hello=hello("grpc-restart"))
        assert (await worker.read()).HasField("welcome")
        assert await services.redis.exists(key)

        redis_server.kill()
        RedisServer(tmp_path / "redis", port=redis_server.port).start()

        async with asyncio.timeout(20):
            while True:
                try:
                    if await services.redis.exists(key):
                        break
                except (RedisError, OSError):  # until the restarted server answers
                    pass
                await asyncio.sleep(0.1)
        await ended(worker)
