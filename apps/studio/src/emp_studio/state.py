"""What one studio process holds for its lifetime: clients, services and the event hub."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from emp_core.catalog import JobCatalog
from emp_core.db.migrate import check_schema
from emp_core.db.session import Database
from emp_core.db.settings import DatabaseSettings
from emp_core.hub import EventHub
from emp_core.patterns.admin import PatternAdmin
from emp_core.queue import Queue
from emp_core.redis_client import connect
from emp_core.settings import QueueSettings
from emp_core.telemetry import Telemetry, setup_telemetry
from emp_core.workers import WorkerRegistry
from emp_studio.settings import StudioSettings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    studio: StudioSettings
    redis: aioredis.Redis
    queue: Queue
    database: Database
    catalog: JobCatalog
    workers: WorkerRegistry
    hub: EventHub
    patterns: PatternAdmin
    telemetry: Telemetry

    @classmethod
    async def start(
        cls, queue_settings: QueueSettings, db_settings: DatabaseSettings, studio: StudioSettings
    ) -> Services:
        """Connect, install the Function library and subscribe to the events channel."""
        await check_schema(db_settings)
        redis = connect(queue_settings.redis_url, socket_connect_timeout=2.0)
        queue = Queue(redis, queue_settings)
        database = Database(db_settings)
        try:
            await queue.functions.load()
            hub = EventHub(redis, queue.keys.events_channel(), backlog=studio.ws_backlog)
            await hub.start()
        except BaseException:
            await redis.aclose()
            await database.dispose()
            raise
        return cls(
            studio=studio,
            redis=redis,
            queue=queue,
            database=database,
            catalog=JobCatalog(queue, database),
            workers=WorkerRegistry(redis, queue.keys),
            hub=hub,
            patterns=PatternAdmin(database, redis, queue.keys),
            # ADR-003: the heartbeat; exported only when OTEL_* configures it.
            telemetry=setup_telemetry("emp-studio"),
        )

    async def stop(self) -> None:
        self.telemetry.shutdown()
        await self.hub.stop()
        await self.redis.aclose()
        await self.database.dispose()
