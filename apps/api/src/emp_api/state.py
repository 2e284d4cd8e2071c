"""What one API process holds for its lifetime: clients, services and the event hub."""

from __future__ import annotations

from dataclasses import dataclass, field

from emp_api.settings import ApiSettings
from emp_core.blobs.settings import BlobSettings
from emp_core.settings import QueueSettings
from emp_core.telemetry import Telemetry
from emp_sql.auth import Authenticator
from emp_sql.settings import DatabaseSettings
from emp_web.backends import Backends
from emp_web.ratelimit import Rule
from emp_web.services import WebServices
from emp_web.webhooks.settings import WebhookSettings


@dataclass(frozen=True, slots=True)
class Rules:
    """The API's rate limits (``emp_web.ratelimit``), read from its settings."""

    token_failures: Rule
    submit: Rule

    @classmethod
    def of(cls, settings: ApiSettings) -> Rules:
        return cls(
            Rule.parse("token-failures", settings.token_failure_limits),
            Rule.parse("submit", settings.submit_limits),
        )


@dataclass(slots=True)
class Services(WebServices):
    api: ApiSettings = field(kw_only=True)
    auth: Authenticator = field(kw_only=True)
    rules: Rules = field(kw_only=True)

    @classmethod
    async def start(
        cls,
        queue_settings: QueueSettings,
        db_settings: DatabaseSettings,
        api: ApiSettings,
        telemetry: Telemetry,
        webhooks: WebhookSettings | None = None,
        blob_settings: BlobSettings | None = None,
    ) -> Services:
        """Connect, install the Function library (refusing an older code's downgrade) and
        subscribe to the events channel."""
        b = await Backends.open(
            queue_settings, db_settings, ws_backlog=api.ws_backlog, blob_settings=blob_settings
        )
        auth = Authenticator(b.database, cache_seconds=api.auth_cache_seconds)
        # A published revocation drops the revoked tokens from this process's cache at once.
        b.hub.on_revocation(lambda revoked: auth.drop(None if revoked is None else revoked.ends))
        return cls(
            **WebServices.parts(b),
            telemetry=telemetry,
            webhooks=webhooks or WebhookSettings(),
            api=api,
            auth=auth,
            rules=Rules.of(api),
        )

    async def stop(self) -> None:
        await self.backends.close()
        self.telemetry.shutdown()
