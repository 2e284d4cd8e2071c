"""What one studio process holds for its lifetime: clients, services and the event hub."""

from __future__ import annotations

from dataclasses import dataclass, field

from emp_core.blobs.settings import BlobSettings
from emp_core.settings import QueueSettings
from emp_core.telemetry import setup_telemetry
from emp_sql.settings import DatabaseSettings
from emp_studio.settings import StudioSettings
from emp_web.backends import Backends
from emp_web.services import WebServices
from emp_web.webhooks.settings import WebhookSettings


@dataclass(slots=True)
class Services(WebServices):
    studio: StudioSettings = field(kw_only=True)

    @classmethod
    async def start(
        cls,
        queue_settings: QueueSettings,
        db_settings: DatabaseSettings,
        studio: StudioSettings,
        webhooks: WebhookSettings | None = None,
        blob_settings: BlobSettings | None = None,
    ) -> Services:
        """Connect, install the Function library and subscribe to the events channel."""
        b = await Backends.open(
            queue_settings, db_settings, ws_backlog=studio.ws_backlog, blob_settings=blob_settings
        )
        # ADR-003: the heartbeat; exported only when OTEL_* configures it.
        return cls(
            **WebServices.parts(b),
            telemetry=setup_telemetry("emp-studio"),
            webhooks=webhooks or WebhookSettings(),
            studio=studio,
        )

    async def stop(self) -> None:
        self.telemetry.shutdown()
        await self.backends.close()
