"""Fixtures of the core's tests beyond the shared ones in the repository's ``conftest.py``."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from emp_core.redis.server import RedisServer


@pytest.fixture(scope="session")
def private_redis_url() -> Iterator[str]:
    """A redis-server of this test session's own, for tests that need a whole server: the
    library's version checks (the library is global to a server), DBSIZE and command counts."""
    with tempfile.TemporaryDirectory(prefix="emp-core-redis-") as directory:
        server = RedisServer(Path(directory)).start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture
async def private_redis(private_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the private server, emptied (keys and functions) before the test."""
    client = aioredis.Redis.from_url(private_redis_url)
    await client.flushall()
    await client.function_flush()
    try:
        yield client
    finally:
        await client.aclose()
