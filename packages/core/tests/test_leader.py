"""The leader lease (redis-py's Lock underneath): one holder, renewed to a full TTL, released on
stop, a lost lease noticed; on one node and on a Redis Cluster (the core's two shapes)."""

from __future__ import annotations

import redis.asyncio as aioredis

from emp_core.queue.queue import Queue
from emp_core.redis.leader import LeaderLease


def _pair(queue: Queue, ttl_s: float = 30.0) -> tuple[LeaderLease, LeaderLease, str]:
    key = queue.keys.archive_leader()
    return (
        LeaderLease(queue.redis, key, ttl_s=ttl_s, holder="first"),
        LeaderLease(queue.redis, key, ttl_s=ttl_s, holder="second"),
        key,
    )


async def test_one_holder_renewed_and_released(queue: Queue, redis: aioredis.Redis) -> None:
    first, second, key = _pair(queue)
    assert await first.acquire_or_renew()
    assert not await second.acquire_or_renew()
    assert await redis.get(key) == b"first"
    # A renewal puts the TTL back to the whole lease, not just "still there".
    await redis.pexpire(key, 500)
    assert await first.acquire_or_renew()
    assert 20_000 < await redis.pttl(key) <= 30_000
    await first.release()
    assert await redis.exists(key) == 0
    assert await second.acquire_or_renew()
    assert not await first.acquire_or_renew()
    assert await redis.get(key) == b"second"


async def test_a_lost_lease_is_noticed_and_not_taken_back(
    queue: Queue, redis: aioredis.Redis
) -> None:
    first, second, key = _pair(queue)
    assert await first.acquire_or_renew()
    await redis.delete(key)  # first stalled past its TTL: the lease ran out
    assert await second.acquire_or_renew()
    assert not await first.acquire_or_renew()  # its renewal does not extend second's lease
    await first.release()  # nor does its release delete it
    assert await redis.get(key) == b"second"
    assert await second.acquire_or_renew()


async def test_release_without_holding_is_harmless(queue: Queue, redis: aioredis.Redis) -> None:
    first, second, key = _pair(queue)
    await first.release()
    assert await second.acquire_or_renew()
    await first.release()
    assert await redis.get(key) == b"second"
