"""What a worker tells the claim about its LoRA cache: the hashes it holds, as a Redis set
(``Keys.worker_loras``) with a TTL, so a worker that dies stops attracting jobs."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from emp_core.queue.keys import Keys


async def advertise_loras(
    redis: Redis, keys: Keys, worker_id: str, hashes: Sequence[str], *, ttl_ms: int
) -> None:
    """Replace the worker's advertised set with ``hashes`` (already bounded by the caller)."""
    key = keys.worker_loras(worker_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if hashes:
            pipe.sadd(key, *hashes)
            pipe.pexpire(key, ttl_ms)
        await pipe.execute()


async def withdraw_loras(redis: Redis, keys: Keys, worker_id: str) -> None:
    await redis.delete(keys.worker_loras(worker_id))
