"""Folding the match counts workers keep in Redis (``emp_core.patterns.counts.fold``), on one node
and on a Redis Cluster (the core suite runs on both): a day's hash is handed off (RENAME, beside
its hand-off record, in one MULTI on the queue's slot), folded once and deleted."""

from __future__ import annotations

from emp_core.patterns.counts import DayCount, fold, record
from emp_core.patterns.rules import Category, Classification
from emp_core.queue.queue import Queue

NOW = 1_790_000_000.0  # a fixed day, so the fold's two days are known


async def test_counts_are_folded_once_and_the_day_hash_is_gone(queue: Queue) -> None:
    matched = Classification(Category.OUT_OF_MEMORY, True, "try again", pattern_id="p1")
    for connector in ("comfyui", "comfyui", "sim"):
        await record(queue.redis, queue.keys, matched, "CUDA out of memory", connector, now_s=NOW)
    folded: dict[str, list[DayCount]] = {}

    async def sql(token: str, counts: list[DayCount]) -> bool:
        if token in folded:
            return False
        folded[token] = counts
        return True

    assert await fold(queue.redis, queue.keys, sql, now_s=NOW) == 3
    (counts,) = folded.values()
    assert sorted((c.connector, c.matches) for c in counts) == [("comfyui", 2), ("sim", 1)]
    assert await fold(queue.redis, queue.keys, sql, now_s=NOW) == 0  # nothing left to fold
    assert len(folded) == 1
    day = counts[0].day.isoformat()
    assert not await queue.redis.exists(queue.keys.pattern_matches(day))
    assert not await queue.redis.zcard(queue.keys.pattern_folding())
