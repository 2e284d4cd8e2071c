"""The snapshot in Redis: written (newest version wins) and announced on save, read by workers."""

from __future__ import annotations

import logging

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from emp_core.patterns.engine import Snapshot
from emp_core.queue.keys import Keys

logger = logging.getLogger(__name__)


async def read_snapshot(redis: Redis, keys: Keys) -> Snapshot | None:
    """The published snapshot, compiled; None when none has been published."""
    raw = await redis.get(keys.patterns_snapshot())
    if raw is None:
        return None
    return Snapshot.from_wire(orjson.loads(raw), source="redis")


async def stored_version(redis: Redis, keys: Keys) -> int | None:
    raw = await redis.get(keys.patterns_snapshot())
    return None if raw is None else int(orjson.loads(raw)["version"])


async def publish_snapshot(redis: Redis, keys: Keys, snapshot: Snapshot) -> bool:
    """Write ``snapshot`` unless a newer version is stored, then announce it. Returns whether
    it was written.

    Two admins saving at once each publish a snapshot read after their own commit; the version
    is the newest change id, so the later read carries the higher (or the same) version.
    WATCH makes the compare-and-set atomic without Lua; an equal version is written again,
    since a snapshot read later holds at least as much.
    """
    key = keys.patterns_snapshot()
    body = orjson.dumps(snapshot.to_wire())
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                if raw is not None and int(orjson.loads(raw)["version"]) > snapshot.version:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(key, body)
                await pipe.execute()
                break
            except WatchError:
                continue
    # Announced after the write, so a worker that hears it reads the snapshot just written; one
    # that misses it re-reads within five minutes. SPUBLISH: the channel carries the queue's hash
    # tag, so on a cluster it stays on the queue's shard (emp_core.redis.subscription).
    await redis.spublish(keys.patterns_channel(), str(snapshot.version))
    logger.info(
        "error patterns snapshot v%d published with %d rules", snapshot.version,
        len(snapshot.rules),
    )  # fmt: skip
    return True
