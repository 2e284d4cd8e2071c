"""The submit's "no worker serves this" warning, asked of Redis once a second per service while
the service is served, every time while it is not (so a new worker clears it at once)."""

from __future__ import annotations

import redis.asyncio as aioredis
from core_factories import make_caps

from emp_core.queue.keys import Keys
from emp_core.registry.workers import ServedCache, WorkerRegistry


async def hgets(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hget", {}).get("calls", 0))


async def test_a_served_service_is_asked_about_once_per_ttl_an_unserved_one_every_time(
    private_redis: aioredis.Redis,
) -> None:
    keys = Keys(queue="served")
    cache = ServedCache(ttl_s=60)
    await private_redis.config_resetstat()
    for _ in range(3):
        warning = await cache.warning(private_redis, keys, "simulation")
        assert warning is not None
        assert "no worker has ever served 'simulation'" in warning
    assert await hgets(private_redis) == 3  # unserved: asked every time

    await WorkerRegistry(private_redis, keys).register(make_caps(worker_id="w1"))
    await private_redis.config_resetstat()
    assert await cache.warning(private_redis, keys, "simulation") is None  # cleared at once
    for _ in range(50):
        assert await cache.warning(private_redis, keys, "simulation") is None
    assert await hgets(private_redis) == 1  # served: asked once for the 51 submits

    # Another queue's service of the same name is its own entry.
    assert await cache.warning(private_redis, Keys(queue="other"), "simulation") is not None


async def test_a_cached_answer_lasts_at_most_the_ttl(private_redis: aioredis.Redis) -> None:
    keys = Keys(queue="served-ttl")
    await WorkerRegistry(private_redis, keys).register(make_caps(worker_id="w1"))
    cache = ServedCache(ttl_s=0)
    await private_redis.config_resetstat()
    for _ in range(4):
        assert await cache.warning(private_redis, keys, "simulation") is None
    assert await hgets(private_redis) == 4
