"""Progress events into the webhook outbox, for users with an endpoint that wants them.

Fed from the process's one event subscription (``EventHub.listen``). Every API process hears
every event; the outbox's unique (endpoint, event) key keeps one delivery. Progress is
best-effort where terminal events are not: pub/sub holds nothing for a moment when no API
process listens, whereas finished jobs reach the outbox through the archive's Redis outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from emp_core.jobs.events import EventType, JobEvent
from emp_core.queue.keys import Keys
from emp_core.redis import text
from emp_sql.session import Database
from emp_sql.webhook_outbox import WebhookOutbox

logger = logging.getLogger(__name__)

_REFRESH_S = 5.0


class ProgressFeed:
    def __init__(self, redis: Redis, keys: Keys, database: Database) -> None:
        self.redis = redis
        self.keys = keys
        self.database = database
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue(maxsize=10_000)
        # Users with an endpoint wanting progress, re-read every few seconds: no SQL per event
        # while nobody wants progress (the common case).
        self._wanting: set[str] = set()
        self._read_at = float("-inf")

    def offer(self, event: JobEvent) -> None:
        if event.type is EventType.PROGRESS:
            with contextlib.suppress(asyncio.QueueFull):
                self._events.put_nowait(event)

    async def _refresh(self) -> None:
        if time.monotonic() - self._read_at >= _REFRESH_S:
            async with self.database.session() as session:
                self._wanting = await WebhookOutbox(session).users_wanting_progress()
            self._read_at = time.monotonic()

    async def handle(self, event: JobEvent) -> int:
        await self._refresh()
        if not self._wanting:
            return 0
        customer = await self.redis.hget(self.keys.job(event.job_id), "customer_id")
        owner = "" if customer is None else text(customer)
        if not owner or owner not in self._wanting:
            return 0
        async with self.database.session() as session:
            return await WebhookOutbox(session).enqueue_progress(event, owner)

    async def run(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self.handle(event)
            except (RedisError, SQLAlchemyError, OSError) as exc:
                logger.warning("a progress webhook was dropped: %s", exc)
