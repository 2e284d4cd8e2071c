"""What a worker tells the claim about its LoRA cache (ADR-010).

- ``Keys.worker_loras(worker)``: the hashes it holds (bounded by the caller), a set with a TTL so
  a worker that dies stops attracting jobs; the claim's affinity score reads it.
- ``Keys.lora_holders(sha256)``: the workers that hold one file, for the optional affinity window
  ("is there a worker this job should wait for?"). Kept by diffs, so an unchanged cache costs one
  SMEMBERS per refresh. A worker that dies without withdrawing stays listed until it comes back
  under its id (a machine's slots keep theirs); the window then holds a job at most its length.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from emp_core.queue.keys import Keys
from emp_core.redis import text_list


async def advertise_loras(
    redis: Redis, keys: Keys, worker_id: str, hashes: Sequence[str], *, ttl_ms: int
) -> None:
    """Replace the worker's advertised set with ``hashes``, and update the holder sets."""
    key = keys.worker_loras(worker_id)
    before = set(text_list(await redis.smembers(key)))
    after = set(hashes)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if after:
            pipe.sadd(key, *after)
            pipe.pexpire(key, ttl_ms)
        for sha in after - before:
            pipe.sadd(keys.lora_holders(sha), worker_id)
        for sha in before - after:
            pipe.srem(keys.lora_holders(sha), worker_id)
        await pipe.execute()


async def withdraw_loras(redis: Redis, keys: Keys, worker_id: str) -> None:
    """Forget what the worker held (a clean exit)."""
    await advertise_loras(redis, keys, worker_id, [], ttl_ms=1)
