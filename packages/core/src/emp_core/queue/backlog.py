"""How much work waits, per service: pending count and the age of the oldest pending job.

Read from the pending index, never a SCAN. Pending sets are ordered by priority, then submit
order, so the oldest job of a set is the head of one of its priority bands: the walk visits the
head of each band present (one lookup per band, a handful in practice) instead of every job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from emp_core.jobs.job import PRIORITY_MAX, pending_score
from emp_core.queue.queue import Queue
from emp_core.redis import text

# Score distance between two adjacent priorities (a whole band of submit order).
_BAND = pending_score(PRIORITY_MAX - 1, 0)
# Bands visited per requirement class; beyond it the age is that of the bands seen (a lower bound).
_MAX_BANDS = 32


@dataclass(frozen=True, slots=True)
class ServiceBacklog:
    service: str
    pending: int
    oldest_pending_age_s: float | None


async def _band_heads(queue: Queue, pending_key: str) -> list[str]:
    """The first job of each priority band of one pending set."""
    heads: list[str] = []
    lower: float | str = "-inf"
    for _ in range(_MAX_BANDS):
        entry: Any = await queue.redis.zrangebyscore(
            pending_key, lower, "+inf", start=0, num=1, withscores=True
        )
        if not entry:
            break
        member, score = entry[0]
        heads.append(text(member))
        lower = (int(score) // _BAND + 1) * _BAND
    return heads


async def backlog(queue: Queue) -> list[ServiceBacklog]:
    """Every service with pending jobs, by name."""
    counts = await queue.depth()
    redis, keys = queue.redis, queue.keys
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    out: list[ServiceBacklog] = []
    for service in sorted(counts):
        heads: list[str] = []
        for class_id in await redis.hkeys(keys.classes(service)):
            heads += await _band_heads(queue, keys.pending(text(class_id)))
        oldest: int | None = None
        if heads:
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in heads:
                    pipe.hget(keys.job(job_id), "created_at")
                created = [int(c) for c in await pipe.execute() if c]
            oldest = min(created) if created else None
        age = None if oldest is None else max(0.0, (now_ms - oldest) / 1000)
        out.append(ServiceBacklog(service, counts[service], age))
    return out


async def backlogs(queues: Iterable[Queue]) -> list[ServiceBacklog]:
    """``backlog`` over several queues (one walk each): a service's pending jobs summed, its
    oldest job the oldest in any queue."""
    merged: dict[str, ServiceBacklog] = {}
    for queue in queues:
        for b in await backlog(queue):
            seen = merged.get(b.service)
            if seen is not None:
                ages = [a for a in (seen.oldest_pending_age_s, b.oldest_pending_age_s) if a]
                b = ServiceBacklog(b.service, seen.pending + b.pending, max(ages, default=None))
            merged[b.service] = b
    return [merged[s] for s in sorted(merged)]
