"""What one studio process holds for its lifetime: clients, services and the event hub."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from emp_core.catalog import JobCatalog
from emp_core.db.session import Database
from emp_core.db.settings import DatabaseSettings
from emp_core.hub import EventHub
from emp_core.patterns.admin import PatternAdmin
from emp_core.queue import Queue
from emp_core.settings import QueueSettings
from emp_core.telemetry import Telemetry, setup_telemetry
from emp_core.web import Backends
from emp_core.workers import WorkerRegistry
from emp_studio.settings import StudioSettings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    studio: StudioSettings
    catalog: JobCatalog
    workers: WorkerRegistry
    patterns: PatternAdmin
    telemetry: Telemetry
    backends: Backends

    # The connections live in ``backends``; these name them the way the routes use them.
    @property
    def redis(self) -> aioredis.Redis:
        return self.backends.redis

    @property
    def queue(self) -> Queue:
        return self.backends.queue

    @property
    def database(self) -> Database:
        return self.backends.database

    @property
    def hub(self) -> EventHub:
        return self.backends.hub

    @classmethod
    async def start(
        cls, queue_settings: QueueSettings, db_settings: DatabaseSettings, studio: StudioSettings
    ) -> Services:
        """Connect, install the Function library and subscribe to the events channel."""
        b = await Backends.open(queue_settings, db_settings, ws_backlog=studio.ws_backlog)
        redis, queue, database = b.redis, b.queue, b.database
        return cls(
            studio=studio,
            catalog=JobCatalog(queue, database),
            workers=WorkerRegistry(redis, queue.keys),
            backends=b,
            patterns=PatternAdmin(database, redis, queue.keys),
            # ADR-003: the heartbeat; exported only when OTEL_* configures it.
            telemetry=setup_telemetry("emp-studio"),
        )

    async def stop(self) -> None:
        self.telemetry.shutdown()
        await self.backends.close()
