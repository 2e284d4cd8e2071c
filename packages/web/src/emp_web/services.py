"""What one web process (API or studio) holds for its lifetime, beyond its own settings: the
backends (Redis, the queue, SQL, the event hub) and the services built on them."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, TypeVar

import redis.asyncio as aioredis
from fastapi import FastAPI

from emp_core.queue import Queue
from emp_core.queue.queues import Queues
from emp_core.registry.workers import WorkerRegistry
from emp_core.telemetry import Telemetry
from emp_sql.catalog import JobCatalog
from emp_sql.loras import LoraLibrary
from emp_sql.patterns_admin import PatternAdmin
from emp_sql.session import Database
from emp_web.backends import Backends
from emp_web.hub import EventHub
from emp_web.ratelimit import RateLimiter, RuleSet
from emp_web.settings import WebSettings
from emp_web.webhooks.settings import WebhookSettings

logger = logging.getLogger(__name__)


class WebParts(TypedDict):
    catalog: JobCatalog
    workers: WorkerRegistry
    patterns: PatternAdmin
    loras: LoraLibrary
    limiter: RateLimiter
    backends: Backends
    webhooks: WebhookSettings


SettingsT = TypeVar("SettingsT")
RulesT = TypeVar("RulesT", bound=RuleSet)


@dataclass(slots=True)
class WebServices(Generic[SettingsT, RulesT]):
    """What both apps build; an app's ``Services`` names its own settings and rate limits as
    the type parameters and adds what only it needs."""

    catalog: JobCatalog
    workers: WorkerRegistry
    patterns: PatternAdmin
    loras: LoraLibrary
    limiter: RateLimiter
    telemetry: Telemetry
    backends: Backends
    # Which webhook URLs are allowed, and how deliveries are sent (EMP_WEBHOOK_*).
    webhooks: WebhookSettings = field(default_factory=WebhookSettings, kw_only=True)
    settings: SettingsT = field(kw_only=True)  # the app's own: ApiSettings, StudioSettings
    rules: RulesT = field(kw_only=True)

    # The connections live in ``backends``; these name them the way the routes use them.
    @property
    def redis(self) -> aioredis.Redis:
        return self.backends.redis

    @property
    def queue(self) -> Queue:
        return self.backends.queue

    @property
    def queues(self) -> Queues:
        return self.backends.queues

    @property
    def database(self) -> Database:
        return self.backends.database

    @property
    def hub(self) -> EventHub:
        return self.backends.hub

    @staticmethod
    def parts(backends: Backends, settings: WebSettings) -> WebParts:
        """The services every web app builds on its backends, as keyword arguments for the
        app's own ``Services`` (which adds its settings and services of its own)."""
        return {
            "webhooks": settings.webhooks,
            "catalog": JobCatalog(backends.queue, backends.database, queues=backends.queues),
            "workers": WorkerRegistry(
                backends.redis, backends.queue.keys, also=[q.keys for q in backends.queues]
            ),
            "patterns": PatternAdmin(backends.database, backends.redis, backends.queue.keys),
            "loras": LoraLibrary(backends.database, backends.blobs),
            "limiter": RateLimiter(
                backends.redis, backends.queue.keys, backends.queue.settings.redis_url
            ),
            "backends": backends,
        }

    async def stop(self) -> None:
        await self.backends.close()
        self.telemetry.shutdown()


S = TypeVar("S", bound=WebServices[Any, Any])


def lifespan(
    start: Callable[[], Awaitable[S]],
    *,
    ready: str,
    after_start: Callable[[FastAPI, S], Awaitable[None] | None] | None = None,
    before_stop: Callable[[FastAPI], Awaitable[None]] | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan: ``start()`` the services into ``app.state.services``, log ``ready``,
    and on shutdown run ``before_stop`` then stop the services."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        services = await start()
        app.state.services = services
        if after_start is not None and inspect.isawaitable(started := after_start(app, services)):
            await started
        logger.info("%s", ready)
        try:
            yield
        finally:
            if before_stop is not None:
                await before_stop(app)
            await services.stop()

    return run
