"""Webhook endpoints and their deliveries, as their owner sees them: register, change, rotate the
secret, delete; list deliveries and their attempts; redeliver.

Every read and write is scoped to the owner: another user's endpoint or delivery is ``NotFound``,
word for word like a missing one (admins included: a webhook is its owner's business). The URL's
safety (no private addresses) is checked by the caller before it gets here (``emp_web.webhooks``);
this module checks only its shape.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emp_core.errors import Conflict, InvalidInput, NotFound
from emp_core.security.sealing import Sealer, is_sealed
from emp_sql import webhook_secrets
from emp_sql.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id

EVENT_TYPES = ("job.completed", "job.failed", "job.cancelled", "job.progress")
MAX_ENDPOINTS_PER_USER = 20
MAX_URL_LENGTH = 2000
# During a rotation the previous secret signs too, for this long, so receivers can switch over.
ROTATION_GRACE = timedelta(hours=24)


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_delivery_id() -> str:
    return "msg_" + secrets.token_hex(16)


def parse_events(events: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(e.strip() for e in events))
    if not chosen:
        raise InvalidInput("choose at least one event type", field="events")
    for event in chosen:
        if event not in EVENT_TYPES:
            raise InvalidInput(
                f"{event!r} is not an event type; choose from {', '.join(EVENT_TYPES)}",
                field="events",
            )
    return chosen


def parse_description(description: str) -> str:
    value = description.strip()
    if len(value) > 200:
        raise InvalidInput("a description has at most 200 characters", field="description")
    return value


@dataclass(frozen=True, slots=True)
class EndpointView:
    """An endpoint as its owner sees it: never the secret (that is shown once, when made)."""

    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    created_at: datetime
    updated_at: datetime
    rotating_until: datetime | None

    @classmethod
    def of(cls, row: WebhookEndpoint) -> EndpointView:
        until = row.previous_secret_until
        return cls(
            id=row.id, url=row.url, events=list(row.events), description=row.description,
            enabled=row.enabled, created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
            rotating_until=None if until is None or as_utc(until) < now_utc() else as_utc(until),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class EndpointWithSecret(EndpointView):
    """An endpoint just made or rotated, with the secret that signs its deliveries: the only
    time the secret leaves the database."""

    secret: str


@dataclass(frozen=True, slots=True)
class AttemptView:
    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    succeeded: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: str
    endpoint_id: str
    event_type: str
    job_id: str | None
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    body: str
    history: list[AttemptView]

    @classmethod
    def of(cls, row: WebhookDelivery, history: Sequence[WebhookAttempt] = ()) -> DeliveryView:
        return cls(
            id=row.id, endpoint_id=row.endpoint_id, event_type=row.event_type, job_id=row.job_id,
            status=row.status, attempts=row.attempts, created_at=as_utc(row.created_at),
            next_attempt_at=as_utc(row.next_attempt_at) if row.status == "pending" else None,
            finished_at=as_utc(row.finished_at) if row.finished_at else None,
            last_status_code=row.last_status_code, last_error=row.last_error, body=row.body,
            history=[
                AttemptView(
                    attempt=a.attempt, started_at=as_utc(a.started_at), duration_ms=a.duration_ms,
                    status_code=a.status_code, succeeded=a.succeeded, error=a.error,
                )
                for a in history
            ],
        )  # fmt: skip


def _fields(view: EndpointView) -> dict[str, Any]:
    return {name: getattr(view, name) for name in EndpointView.__slots__}


class WebhookRepository:
    """One owner's endpoints and deliveries within one session (one transaction)."""

    def __init__(self, session: AsyncSession, user_id: str) -> None:
        self.session = session
        self.user_id = user_id

    async def _endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        row = await self.session.get(WebhookEndpoint, endpoint_id)
        if row is None or row.user_id != self.user_id:
            raise NotFound(f"no webhook endpoint {endpoint_id}", field="endpoint_id")
        return row

    async def create(
        self, url: str, events: Iterable[str], description: str = "", *, sealer: Sealer
    ) -> EndpointWithSecret:
        """Add an endpoint; returns it with its secret (which is never shown again, and is
        stored sealed by ``sealer``)."""
        chosen = parse_events(events)
        text = parse_description(description)
        count = await self.session.scalar(
            select(func.count()).select_from(WebhookEndpoint).where(
                WebhookEndpoint.user_id == self.user_id
            )
        )  # fmt: skip
        if (count or 0) >= MAX_ENDPOINTS_PER_USER:
            raise Conflict(f"a user may have at most {MAX_ENDPOINTS_PER_USER} webhook endpoints")
        secret, now, endpoint_id = new_secret(), now_utc(), new_id()
        row = WebhookEndpoint(
            id=endpoint_id, user_id=self.user_id, url=url, events=chosen, description=text,
            enabled=True, secret=webhook_secrets.seal(sealer, endpoint_id, secret),
            created_at=now, updated_at=now,
        )  # fmt: skip
        self.session.add(row)
        await self.session.flush()
        return EndpointWithSecret(**_fields(EndpointView.of(row)), secret=secret)

    async def endpoints(self) -> list[EndpointView]:
        rows = await self.session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.user_id == self.user_id)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
        return [EndpointView.of(r) for r in rows]

    async def get(self, endpoint_id: str) -> EndpointView:
        return EndpointView.of(await self._endpoint(endpoint_id))

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> EndpointView:
        row = await self._endpoint(endpoint_id)
        if url is not None:
            row.url = url
        if events is not None:
            row.events = parse_events(events)
        if description is not None:
            row.description = parse_description(description)
        if enabled is not None:
            row.enabled = enabled
        row.updated_at = now_utc()
        await self.session.flush()
        return EndpointView.of(row)

    async def rotate_secret(self, endpoint_id: str, *, sealer: Sealer) -> EndpointWithSecret:
        """A new secret (returned, shown once, stored sealed); the old one keeps signing for a
        day. The old one moves as stored (sealed for this row, so it opens in either column);
        a plaintext one from before sealing is sealed on the way."""
        row = await self._endpoint(endpoint_id)
        now, secret, old = now_utc(), new_secret(), row.secret
        if not is_sealed(old):
            old = webhook_secrets.seal(sealer, row.id, old)
        row.previous_secret, row.previous_secret_until = old, now + ROTATION_GRACE
        row.secret, row.updated_at = webhook_secrets.seal(sealer, row.id, secret), now
        await self.session.flush()
        return EndpointWithSecret(**_fields(EndpointView.of(row)), secret=secret)

    async def delete(self, endpoint_id: str) -> None:
        await self._endpoint(endpoint_id)
        await self.session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        )
        await self.session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))

    # --- deliveries ------------------------------------------------------------------------------
    async def deliveries(self, endpoint_id: str, *, limit: int = 50) -> list[DeliveryView]:
        await self._endpoint(endpoint_id)
        rows = await self.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .limit(max(1, min(limit, 200)))
        )
        return [DeliveryView.of(r) for r in rows]

    async def _delivery(self, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        row = await self.session.get(WebhookDelivery, delivery_id)
        if row is None or row.user_id != self.user_id or row.endpoint_id != endpoint_id:
            raise NotFound(f"no delivery {delivery_id}", field="delivery_id")
        return row

    async def delivery(self, endpoint_id: str, delivery_id: str) -> DeliveryView:
        row = await self._delivery(endpoint_id, delivery_id)
        history = await self.session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.id)
        )
        return DeliveryView.of(row, list(history))

    async def redeliver(
        self, endpoint_id: str, delivery_id: str, *, max_age: timedelta = timedelta(hours=24)
    ) -> DeliveryView:
        """Send a finished delivery again, with the same id and body (a receiver that already
        has it can tell), on a fresh retry schedule. A delivery still being tried is a conflict."""
        row = await self._delivery(endpoint_id, delivery_id)
        if row.status == "pending":
            raise Conflict("this delivery is still being attempted", field="delivery_id")
        now = now_utc()
        await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status != "pending")
            .values(
                status="pending",
                next_attempt_at=now,
                give_up_at=now + max_age,
                finished_at=None,
                lease_token=None,
            )
        )
        await self.session.refresh(row)
        return DeliveryView.of(row)
