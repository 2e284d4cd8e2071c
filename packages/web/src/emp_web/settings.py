"""The settings both web apps read besides their own: the queue, the SQL database, webhooks and
the blob store, handed around as one bundle so that neither app repeats the list."""

from __future__ import annotations

from dataclasses import dataclass, field

from emp_core.blobs.settings import BlobSettings
from emp_core.settings import QueueSettings
from emp_sql.settings import DatabaseSettings
from emp_web.webhooks.settings import WebhookSettings


@dataclass(frozen=True, slots=True)
class WebSettings:
    """A part left out is read from its environment variables (``EMP_REDIS_URL``,
    ``EMP_DATABASE_URL``, ``EMP_WEBHOOK_*``; ``EMP_BLOB_*`` when the store opens)."""

    queue: QueueSettings = field(default_factory=QueueSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    blobs: BlobSettings | None = None
