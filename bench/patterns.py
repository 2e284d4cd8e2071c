"""Error-pattern benchmark (ADR-009): classification latency at 10, 100 and 1,000 patterns, and
the time from an admin saving a pattern to a worker classifying with it.

    uv run python -m bench.patterns

Classification runs in this process on a compiled snapshot, as a worker's does. Propagation uses
a private ``redis-server`` and a SQLite file: a save goes through ``PatternAdmin`` (SQL commit,
snapshot publish, announcement) and the clock stops when a ``PatternCache`` has swapped to the
new version.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from emp_core.patterns import Category, MatchKind, PatternCache, PatternRule, Snapshot
from emp_core.queue.keys import Keys
from emp_core.redis.server import RedisServer
from emp_sql import DatabaseSettings, migrate
from emp_sql.patterns_admin import PatternAdmin
from emp_sql.session import Database

_CONNECTORS = ("comfyui", "simulation", "openai", None)
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")


def _rules(count: int, rng: random.Random) -> list[PatternRule]:
    rules = []
    for i in range(count):
        words = " ".join(rng.sample(_WORDS, 3))
        regex = i % 3 == 0
        rules.append(
            PatternRule(
                id=f"p{i}",
                name=f"p{i}",
                match_kind=MatchKind.REGEX if regex else MatchKind.SUBSTRING,
                pattern=f"code {i}: {words.replace(' ', '[ _-]')}" if regex else f"err-{i} {words}",
                category=Category.UNKNOWN,
                retryable=bool(i % 2),
                user_message="m",
                connector=_CONNECTORS[i % 4],
                priority=rng.randint(-10, 10),
            )
        )
    return rules


def _messages(count: int, rng: random.Random, n_rules: int) -> list[str]:
    """Failure messages about 400 characters long; a third match some rule, near the end."""
    out = []
    for i in range(count):
        body = " ".join(rng.choice(_WORDS) for _ in range(60))[:380]
        if i % 3 == 0:
            k = rng.randrange(n_rules)
            body += f" err-{k} " if k % 3 else f" code {k}: "
        out.append(body)
    return out


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def classification(counts: tuple[int, ...] = (10, 100, 1000), n: int = 20_000) -> list[str]:
    rng = random.Random(7)
    lines = []
    for count in counts:
        built = time.perf_counter()
        snapshot = Snapshot.build(1, _rules(count, rng))
        compile_ms = (time.perf_counter() - built) * 1000
        messages = _messages(1000, rng, count)
        samples = []
        for i in range(n):
            message, connector = messages[i % len(messages)], _CONNECTORS[i % 4]
            start = time.perf_counter_ns()
            snapshot.classify(message, connector=connector)
            samples.append((time.perf_counter_ns() - start) / 1000)
        lines.append(
            f"| {count:>5} | {statistics.median(samples):7.1f} | {_percentile(samples, 99):7.1f} "
            f"| {_percentile(samples, 99.9):7.1f} | {compile_ms:9.1f} |"
        )
    return lines


async def propagation(rounds: int = 20) -> list[float]:
    """Seconds from ``PatternAdmin.create`` being called to a worker's cache using it."""
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder) / "redis").start()
        url = f"sqlite+aiosqlite:///{folder}/emp.db"
        await migrate.upgrade(DatabaseSettings(database_url=url))
        database = Database(DatabaseSettings(database_url=url))
        redis = aioredis.Redis.from_url(server.url)
        worker_redis = aioredis.Redis.from_url(server.url)
        keys = Keys(queue="bench")
        cache = PatternCache(worker_redis, keys, refresh_s=300)
        admin = PatternAdmin(database, redis, keys)
        try:
            await cache.start()
            took = []
            for i in range(rounds):
                cache.swapped.clear()
                start = time.perf_counter()
                await admin.create({
                    "name": f"bench {i}", "pattern": f"bench failure {i}", "category": "unknown",
                    "retryable": True, "user_message": "m",
                }, by="bench")  # fmt: skip
                await asyncio.wait_for(cache.swapped.wait(), 10)
                assert cache.classify(f"a bench failure {i} here").matched
                took.append(time.perf_counter() - start)
            return took
        finally:
            await cache.stop()
            await redis.aclose()
            await worker_redis.aclose()
            await database.dispose()
            server.stop()


def main() -> int:
    print("Classification (one message, one snapshot; µs)\n")
    print("| rules | p50 µs  | p99 µs  | p99.9 µs | compile ms |")
    print("|------:|--------:|--------:|--------:|----------:|")
    for line in classification():
        print(line)
    took = asyncio.run(propagation())
    print("\nSave to worker using it (SQLite commit + Redis publish + swap; ms)\n")
    print("| saves | p50 ms | p99 ms | max ms |")
    print("|------:|-------:|-------:|-------:|")
    ms = [t * 1000 for t in took]
    print(
        f"| {len(ms):>5} | {statistics.median(ms):6.1f} | {_percentile(ms, 99):6.1f} "
        f"| {max(ms):6.1f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
