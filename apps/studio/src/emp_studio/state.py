"""What one studio process holds for its lifetime: clients, services and the event hub."""

from __future__ import annotations

from dataclasses import dataclass, field

from emp_core.blobs.settings import BlobSettings
from emp_core.settings import QueueSettings
from emp_core.telemetry import setup_telemetry
from emp_sql.settings import DatabaseSettings
from emp_studio.settings import StudioSettings
from emp_web.backends import Backends
from emp_web.ratelimit import Rule
from emp_web.services import WebServices
from emp_web.sessions import SessionStore
from emp_web.webhooks.settings import WebhookSettings


@dataclass(frozen=True, slots=True)
class Rules:
    """The studio's rate limits (``emp_web.ratelimit``), read from its settings."""

    signin_account: Rule
    signin_address: Rule
    submit: Rule

    @classmethod
    def of(cls, settings: StudioSettings) -> Rules:
        return cls(
            Rule.parse("signin-account", settings.signin_account_limits),
            Rule.parse("signin-address", settings.signin_address_limits),
            Rule.parse("submit", settings.submit_limits),
        )


@dataclass(slots=True)
class Services(WebServices):
    studio: StudioSettings = field(kw_only=True)
    sessions: SessionStore = field(kw_only=True)
    rules: Rules = field(kw_only=True)

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
        sessions = SessionStore(
            b.redis, b.queue.keys, idle_seconds=studio.session_idle_seconds,
            max_seconds=studio.session_max_age_seconds,
        )  # fmt: skip
        return cls(
            **WebServices.parts(b),
            telemetry=setup_telemetry("emp-studio"),
            webhooks=webhooks or WebhookSettings(),
            studio=studio,
            sessions=sessions,
            rules=Rules.of(studio),
        )

    async def stop(self) -> None:
        self.telemetry.shutdown()
        await self.backends.close()
