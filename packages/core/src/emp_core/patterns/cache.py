"""A worker's compiled snapshot: loaded at start, swapped when a new version is announced, and
re-read every ``refresh_s`` (5 minutes) in case an announcement was missed. Classifying reads
only memory; no database is involved anywhere here."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from emp_core.patterns import counts
from emp_core.patterns.engine import Snapshot
from emp_core.patterns.portable import STARTER_VERSION, starter_snapshot
from emp_core.patterns.rules import Classification
from emp_core.patterns.store import read_snapshot
from emp_core.queue.keys import Keys
from emp_core.redis.subscription import ShardSubscription

logger = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 300.0


class PatternCache:
    """Holds the snapshot one process classifies with; ``start`` before use, ``stop`` after."""

    def __init__(
        self, redis: Redis, keys: Keys, *, refresh_s: float = DEFAULT_REFRESH_SECONDS,
        subscribe: bool = True,
    ) -> None:  # fmt: skip
        self.redis = redis
        self.keys = keys
        self.refresh_s = refresh_s
        self.subscribe = subscribe
        # Built on first use: most workers find a published snapshot at start and never need the
        # starter set, whose YAML parse and RE2 compile were a fifth of a worker's start-up.
        self._snapshot: Snapshot | None = None
        self.swapped = asyncio.Event()  # set on every swap; tests and the bench wait on it
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot in use: the latest read from Redis, else the shipped starter set."""
        if self._snapshot is None:
            self._snapshot = starter_snapshot()
        return self._snapshot

    @property
    def version(self) -> int:
        return STARTER_VERSION if self._snapshot is None else self._snapshot.version

    def classify(
        self, message: str, *, connector: str | None = None, http_status: int | None = None
    ) -> Classification:
        return self.snapshot.classify(message, connector=connector, http_status=http_status)

    async def record(self, outcome: Classification, message: str, connector: str) -> None:
        """Count a classified failure in Redis; a lost count is logged, never raised."""
        try:
            await counts.record(self.redis, self.keys, outcome, message, connector)
        except (RedisError, OSError) as exc:
            logger.warning("could not count an error-pattern match: %s", exc)

    async def refresh(self) -> bool:
        """Read the stored snapshot; swap when it is newer. Returns whether it swapped."""
        try:
            fresh = await read_snapshot(self.redis, self.keys)
        except (RedisError, OSError, ValueError, KeyError) as exc:
            logger.warning("error patterns not refreshed, keeping v%d: %s", self.version, exc)
            return False
        if fresh is None:
            return False
        held = self._snapshot
        if held is not None and held.source == "redis" and fresh.version <= held.version:
            return False
        self._snapshot = fresh
        self.swapped.set()
        logger.info("error patterns v%d in use (%d rules)", fresh.version, len(fresh.rules))
        return True

    async def start(self) -> None:
        subscription = None
        if self.subscribe:
            # Subscribed before the first read, so a version saved in between is not missed.
            subscription = ShardSubscription(self.redis, [self.keys.patterns_channel()])
            await subscription.open()
        await self.refresh()
        if subscription is not None:
            listen = self._listen(subscription)
            self._tasks.append(asyncio.create_task(listen, name="patterns-listen"))
        self._tasks.append(asyncio.create_task(self._poll(), name="patterns-poll"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _listen(self, subscription: ShardSubscription) -> None:
        try:
            while True:
                try:
                    message = await subscription.get(self.refresh_s)
                    if message is None:
                        continue
                    if message["type"] == "ssubscribe":
                        await self.refresh()  # subscribed again: an announcement may be lost
                    elif int(message["data"]) > self.version:
                        await self.refresh()
                except (RedisError, OSError) as exc:
                    logger.warning("error-pattern announcements interrupted: %s", exc)
                    await asyncio.sleep(1.0)
        finally:
            await subscription.aclose()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()
