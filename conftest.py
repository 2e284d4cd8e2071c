"""Fixtures shared by every package's tests: a real Redis, and a queue with keys of its own.

Redis is a private ``redis-server`` on a free port started once per session, unless
``EMP_TEST_REDIS_URL`` names one (for a CI service container, say). Each test gets its own queue
name, so its keys never meet another test's and tests can run in parallel.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from emp_core.queue.queue import Queue
from emp_core.redis.client import connect
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("EMP_TEST_REDIS_URL"):
        yield url
        return
    server = RedisServer(Path(tmp_path_factory.mktemp("redis"))).start()
    try:
        yield server.url
    finally:
        server.stop()


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
