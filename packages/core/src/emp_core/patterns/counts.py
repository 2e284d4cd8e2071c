"""Match counting: workers count in Redis (cheap, no SQL on the job path); the API folds the
counts into SQL exactly once.

Exactly once, with any number of folders: a folder first RENAMEs a day's hash to a key of its
own (atomic: the counts are now its alone, and workers start a fresh hash with their next
HINCRBY), records the hand-off, folds the hash into SQL in one transaction that also records
the hand-off's token, and only then deletes the hash. A folder that dies between the commit
and the delete leaves a hash whose token SQL already holds: the next folder deletes it unread.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from emp_core.patterns.engine import truncate
from emp_core.patterns.rules import Classification
from emp_core.queue.keys import Keys
from emp_core.redis import text

logger = logging.getLogger(__name__)

# Hash fields: ``c|<pattern id>|<connector>`` counts; ``t|…`` the last match (ms).
_SEP = "|"
_KEEP_SECONDS = 8 * 24 * 3600  # day hashes outlive a week of folder downtime
UNMATCHED_KEPT = 200  # messages per day in the unmatched set
_ORPHAN_AFTER_MS = 60_000  # a hand-off older than this belongs to a folder that died


def day_of(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).date().isoformat()


async def record(
    redis: Redis, keys: Keys, outcome: Classification, message: str, connector: str,
    *, now_s: float | None = None,
) -> None:  # fmt: skip
    """Count one classified failure: a match per pattern, or the message as unmatched."""
    now_s = time.time() if now_s is None else now_s
    day = day_of(now_s)
    async with redis.pipeline(transaction=False) as pipe:
        if outcome.pattern_id is not None:
            key = keys.pattern_matches(day)
            tail = f"{outcome.pattern_id}{_SEP}{connector}"
            pipe.hincrby(key, f"c{_SEP}{tail}", 1)
            pipe.hset(key, f"t{_SEP}{tail}", int(now_s * 1000))
            pipe.expire(key, _KEEP_SECONDS)
        else:
            key = keys.pattern_unmatched(day)
            pipe.zincrby(key, 1, truncate(message))
            # Keep the most frequent: drop the lowest-ranked past the bound. A new message can
            # still enter tomorrow's set, which starts empty.
            pipe.zremrangebyrank(key, 0, -(UNMATCHED_KEPT + 1))
            pipe.expire(key, _KEEP_SECONDS)
        await pipe.execute()


@dataclass(frozen=True, slots=True)
class DayCount:
    pattern_id: str
    day: date
    connector: str
    matches: int
    last_matched_at: datetime | None


def parse_counts(day: date, fields: Mapping[Any, Any]) -> list[DayCount]:
    counts: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], int] = {}
    for raw_field, raw_value in fields.items():
        name = text(raw_field)
        kind, pattern_id, connector = name.split(_SEP, 2)
        target = counts if kind == "c" else last
        target[(pattern_id, connector)] = int(raw_value)
    out = []
    for (pid, conn), n in counts.items():
        seen = last.get((pid, conn))
        at = None if seen is None else datetime.fromtimestamp(seen / 1000, UTC)
        out.append(DayCount(pid, day, conn, n, at))
    return out


# Folds one hand-off into SQL in one transaction: (token, counts) -> False when the token
# was folded already (the counts are then discarded).
SqlFold = Callable[[str, list[DayCount]], Awaitable[bool]]


async def _fold_key(redis: Redis, keys: Keys, token: str, day: date, sql: SqlFold) -> int:
    key = keys.pattern_matches_folding(token)
    fields = await redis.hgetall(key)
    counts = parse_counts(day, fields) if fields else []
    folded = await sql(token, counts) if counts else False
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.zrem(keys.pattern_folding(), f"{token}{_SEP}{day.isoformat()}")
        await pipe.execute()
    return sum(c.matches for c in counts) if folded else 0


async def fold(
    redis: Redis, keys: Keys, sql: SqlFold, *, days: Iterable[date] | None = None,
    now_s: float | None = None,
) -> int:  # fmt: skip
    """Move the Redis counts of ``days`` (today and yesterday by default) into SQL; returns the
    matches folded. Safe to run from any number of processes at once."""
    now_s = time.time() if now_s is None else now_s
    today = datetime.fromtimestamp(now_s, UTC).date()
    total = 0
    # Hand-offs of a folder that died mid-way come first.
    stale = await redis.zrangebyscore(keys.pattern_folding(), 0, now_s * 1000 - _ORPHAN_AFTER_MS)
    for member in stale:
        token, day_text = text(member).split(_SEP)
        total += await _fold_key(redis, keys, token, date.fromisoformat(day_text), sql)
    for day in days if days is not None else (today - timedelta(days=1), today):
        token = uuid.uuid4().hex
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.pattern_folding(), {f"{token}{_SEP}{day.isoformat()}": now_s * 1000})
            # As a plain command: redis-py's cluster pipeline refuses its ``rename`` method (two
            # keys may be in two slots), but both keys are in this queue's slot.
            day_key = keys.pattern_matches(day.isoformat())
            pipe.execute_command("RENAME", day_key, keys.pattern_matches_folding(token))
            try:
                await pipe.execute()
            except ResponseError:  # no such key: nothing counted that day since the last fold
                await redis.zrem(keys.pattern_folding(), f"{token}{_SEP}{day.isoformat()}")
                continue
        total += await _fold_key(redis, keys, token, day, sql)
    return total


async def unmatched(redis: Redis, keys: Keys, *, days: int = 7, limit: int = 50,
                    now_s: float | None = None) -> list[tuple[str, int]]:  # fmt: skip
    """The most frequent unmatched messages of the last ``days`` days, with their counts."""
    now_s = time.time() if now_s is None else now_s
    names = [keys.pattern_unmatched(day_of(now_s - 86_400 * i)) for i in range(days)]
    existing = [n for n in names if await redis.exists(n)]
    if not existing:
        return []
    rows: Any = await redis.zunion(existing, withscores=True)
    ranked = sorted(((text(m), int(s)) for m, s in rows), key=lambda r: (-r[1], r[0]))
    return ranked[:limit]
