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


@pytest.fixture(scope="session")
def redis_url(redis_url_both: str) -> str:
    """The core's queue tests run twice: on one node, and on a real local Redis Cluster of three
    primaries (``redis+cluster://``), each queue's keys in one slot. One suite, two shapes."""
    return redis_url_both
