"""The connection pool of ``emp_core.redis.client.connect``: redis-py's waiting pool with a fast
path when a connection is free and nobody waits. The fast path must not change what the pool
promises: at most ``max_connections`` sockets, callers beyond that wait their turn (none fails),
and a connection the server dropped is replaced on its next use."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError

from emp_core.redis.client import connect


async def test_callers_beyond_the_pool_wait_their_turn_and_none_fails(
    private_redis_url: str,
) -> None:
    client = connect(private_redis_url, max_connections=2)
    try:
        # Each call holds its connection for 20 ms on the server: 40 at once must queue.
        replies = await asyncio.gather(
            *(client.execute_command("BLPOP", "emp:test:pool:none", 0.02) for _ in range(40))
        )
        assert replies == [None] * 40
        pool = client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) == 2
        assert not pool._in_use_connections  # every connection came back
        # Served one after another, the same two connections are reused (the fast path).
        for i in range(100):
            assert await client.incr("emp:test:pool:n") == i + 1
        assert len(pool._available_connections) == 2
    finally:
        await client.delete("emp:test:pool:n")
        await client.aclose()


async def test_a_connection_the_server_dropped_is_replaced_on_its_next_use(
    private_redis_url: str,
) -> None:
    client = connect(private_redis_url, max_connections=2)
    try:
        await client.client_setname("emp-pool-test")
        assert await client.client_getname() == "emp-pool-test"
        # The server closes it (a restart, an idle timeout, CLIENT KILL by an operator).
        admin = connect(private_redis_url)
        killed = await admin.client_kill_filter(_type="normal", skipme=True)
        await admin.aclose()
        assert killed >= 1
        # The next command on that socket fails, as it does through redis-py's own pool (the
        # server may have run it); the connection is dropped, and the one after reconnects.
        with pytest.raises(ConnectionError):
            await client.ping()
        assert await client.ping() is True
        assert await client.client_getname() is None  # a new connection: the name went with it
    finally:
        await client.aclose()
