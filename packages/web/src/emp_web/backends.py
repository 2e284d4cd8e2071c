"""What every web process (API, studio) opens at start and closes at exit: Redis with the
Function library installed, the SQL database at the migrations' head, the event hub and the blob
store (``EMP_BLOB_URL``)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from emp_core.blobs.settings import open_store
from emp_core.blobs.store import BlobStore
from emp_core.queue.queue import Queue
from emp_core.queue.queues import Queues
from emp_core.redis.client import connect
from emp_sql.migrate import check_schema
from emp_sql.session import Database
from emp_web.hub import EventHub
from emp_web.settings import WebSettings


@dataclass(slots=True)
class Backends:
    redis: Redis
    queue: Queue  # the home queue (EMP_QUEUE): error patterns, sessions, registries of machines
    queues: Queues  # every queue the deployment names (EMP_QUEUE_ROUTES): jobs live in these
    database: Database
    hub: EventHub
    blobs: BlobStore

    @classmethod
    async def open(
        cls,
        settings: WebSettings,
        *,
        ws_backlog: int,
    ) -> Backends:
        """Refuse a database not at head or without its data key (``EMP_DATA_KEY``, required
        with PostgreSQL), install the library (never downgrading a newer one) and subscribe the
        hub to the events channel; on failure close what was opened."""
        queue_settings = settings.queue
        await check_schema(settings.database)
        database = Database(settings.database)
        try:
            _ = database.sealer  # read now: a missing key stops the start, not the first use
        except BaseException:
            await database.dispose()
            raise
        redis = connect(
            queue_settings.redis_url,
            max_connections=queue_settings.redis_max_connections,
            pool_timeout=queue_settings.redis_pool_timeout_seconds,
            # Generous: under a burst the event loop itself lags, and a connection that Redis
            # accepted at once would still time out here (seen at 1,000 sockets).
            socket_connect_timeout=10.0,
        )
        queue = Queue(redis, queue_settings)
        queues = Queues(redis, queue_settings)
        blobs: BlobStore | None = None
        try:
            await queue.functions.load()
            blobs = await open_store(settings.blobs)
            keys = queue.keys
            hub = EventHub(
                redis, [q.keys.events_channel() for q in queues], backlog=ws_backlog,
                revocations=keys.revocations_channel(),
            )  # fmt: skip
            await hub.start()
        except BaseException:
            if blobs is not None:
                await blobs.close()
            await redis.aclose()
            await database.dispose()
            raise
        return cls(redis=redis, queue=queue, queues=queues, database=database, hub=hub, blobs=blobs)

    async def close(self) -> None:
        await self.hub.stop()
        await self.blobs.close()
        await self.redis.aclose()
        await self.database.dispose()
