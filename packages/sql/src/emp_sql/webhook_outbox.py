"""The webhook outbox: deliveries are written here in the transaction that learns of the event,
and dispatchers claim them from here.

Exactly one row per (endpoint, event): ``event_key`` is unique per endpoint and every insert is
``ON CONFLICT DO NOTHING``, so the archive projector projecting a job twice, or every API process
hearing the same progress event, still stores one delivery. Claiming is a compare-and-set on
``next_attempt_at`` (it doubles as the lease), which works the same on SQLite and PostgreSQL and
lets any number of dispatchers share the table: a row is taken by one of them, and a dispatcher
that dies mid-request leaves it due again once its lease has passed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from emp_core.jobs.events import JobEvent
from emp_core.jobs.job import Job, JobStatus
from emp_core.security.sealing import Sealer, SealError
from emp_sql.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from emp_sql.webhook_secrets import signing_secrets
from emp_sql.webhooks import as_utc, new_delivery_id, now_utc

_TERMINAL_TYPES = {
    JobStatus.COMPLETED: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}
# What an attempt's error text may hold (a receiver's reason phrase, an exception message).
_ERROR_CHARS = 500


def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


def job_body(job: Job, event_type: str, at: datetime) -> str:
    """The body of a job's terminal event: the job's own facts and outcome, for its owner only.
    No payload (it can be large and was the sender's to begin with), no worker or trace ids."""
    data = {
        "job_id": job.id, "status": job.status.value, "service": job.service,
        "workflow_id": job.workflow_id, "attempts": job.attempts, "result": job.result,
        "error": job.error_user_message or job.error, "error_category": job.error_category,
        "created_at": _iso(job.created_at), "finished_at": _iso(job.finished_at),
    }  # fmt: skip
    body = {"type": event_type, "timestamp": _iso(at), "data": data}
    return orjson.dumps(body).decode()


def progress_body(event: JobEvent) -> str:
    data = {
        "job_id": event.job_id, "status": event.status, "progress": event.progress,
        "message": event.message,
    }  # fmt: skip
    body = {"type": "job.progress", "timestamp": _iso(event.at), "data": data}
    return orjson.dumps(body).decode()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a dispatcher holds until ``lease_until``: everything one attempt needs.
    ``refused`` says why it must not be sent (its secret does not unseal); the attempt is then
    recorded as failed with that reason, like any other, and retried on the same schedule (the
    operator may add the missing key back)."""

    id: str
    url: str
    secrets: tuple[str, ...]
    body: str
    attempt: int
    token: str
    give_up_at: datetime
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookOutbox:
    """Deliveries within one session (one transaction)."""

    def __init__(self, session: AsyncSession, *, max_age: timedelta = timedelta(hours=24)) -> None:
        self.session = session
        self.max_age = max_age

    async def _endpoints(self, user_ids: Iterable[str], event_type: str) -> list[WebhookEndpoint]:
        ids = list(set(user_ids))
        if not ids:
            return []
        rows = await self.session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.user_id.in_(ids), WebhookEndpoint.enabled.is_(True)
            )
        )
        # The event list is JSON: filtered here, the same way on both databases.
        return [r for r in rows if event_type in r.events]

    async def _insert(self, rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(WebhookDelivery).values(list(rows))
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[WebhookDelivery.endpoint_id, WebhookDelivery.event_key]
        )
        result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)

    def _row(self, endpoint: WebhookEndpoint, event_type: str, key: str, job_id: str,
             body: str) -> dict[str, Any]:  # fmt: skip
        now = now_utc()
        return {
            "id": new_delivery_id(), "endpoint_id": endpoint.id, "user_id": endpoint.user_id,
            "event_type": event_type, "event_key": key, "job_id": job_id, "body": body,
            "status": "pending", "attempts": 0, "next_attempt_at": now,
            "give_up_at": now + self.max_age, "created_at": now,
        }  # fmt: skip

    async def enqueue_finished(self, jobs: Iterable[Job]) -> int:
        """Deliveries for finished jobs to their owners' endpoints; returns how many are new."""
        rows: list[dict[str, Any]] = []
        by_type: dict[str, list[Job]] = {}
        for job in jobs:
            if job.customer_id and job.status in _TERMINAL_TYPES:
                by_type.setdefault(_TERMINAL_TYPES[job.status], []).append(job)
        for event_type, group in by_type.items():
            endpoints = await self._endpoints((j.customer_id or "" for j in group), event_type)
            for job in group:
                body = job_body(job, event_type, job.finished_at or now_utc())
                for endpoint in endpoints:
                    if endpoint.user_id == job.customer_id:
                        key = f"{event_type}:{job.id}"
                        rows.append(self._row(endpoint, event_type, key, job.id, body))
        return await self._insert(rows)

    async def enqueue_progress(self, event: JobEvent, customer_id: str) -> int:
        endpoints = await self._endpoints([customer_id], "job.progress")
        key = f"job.progress:{event.job_id}:{event.event_id}"
        body = progress_body(event)
        rows = [self._row(e, "job.progress", key, event.job_id, body) for e in endpoints]
        return await self._insert(rows)

    async def users_wanting_progress(self) -> set[str]:
        rows = await self.session.execute(
            select(WebhookEndpoint.user_id, WebhookEndpoint.events).where(
                WebhookEndpoint.enabled.is_(True)
            )
        )
        return {user for user, events in rows.all() if "job.progress" in events}

    # --- dispatching -----------------------------------------------------------------------------
    async def claim_due(self, *, limit: int, lease: timedelta, sealer: Sealer) -> list[Claimed]:
        """Take up to ``limit`` due deliveries for ``lease``; each goes to one caller only, with
        its endpoint's secrets unsealed by ``sealer``."""
        now = now_utc()
        ids = list(
            await self.session.scalars(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            )
        )
        claimed: list[Claimed] = []
        for delivery_id in ids:
            token = secrets.token_hex(16)
            result = await self.session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= now,
                )
                .values(
                    next_attempt_at=now + lease,
                    lease_token=token,
                    attempts=WebhookDelivery.attempts + 1,
                )
            )
            if getattr(result, "rowcount", 0) != 1:
                continue  # another dispatcher took it first
            row = (
                await self.session.execute(
                    select(WebhookDelivery, WebhookEndpoint)
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                    .where(WebhookDelivery.id == delivery_id)
                    .execution_options(populate_existing=True)
                )
            ).one()
            delivery, endpoint = row
            if not endpoint.enabled:
                delivery.status, delivery.finished_at = "failed", now
                delivery.last_error, delivery.lease_token = "the endpoint is disabled", None
                continue
            until = endpoint.previous_secret_until
            rotating = until is not None and as_utc(until) > now
            keys: tuple[str, ...] = ()
            refused = None
            try:
                keys = signing_secrets(sealer, endpoint, rotating=rotating)
            except SealError as exc:
                refused = f"not sent: {exc.message}"
            claimed.append(
                Claimed(
                    id=delivery.id,
                    url=endpoint.url,
                    secrets=keys,
                    body=delivery.body,
                    attempt=delivery.attempts,
                    token=token,
                    give_up_at=as_utc(delivery.give_up_at),
                    refused=refused,
                )
            )
        return claimed

    async def finish(self, claimed: Claimed, outcome: Outcome, retry_in: timedelta) -> str | None:
        """Record an attempt and what follows: succeeded, another try after ``retry_in``, or
        failed once that would pass the delivery's deadline. Returns the new status, or None
        when the claim was lost (its lease ran out and another dispatcher took the delivery:
        then that one records what happens)."""
        now = now_utc()
        if outcome.succeeded:
            values: dict[str, Any] = {"status": "succeeded", "finished_at": now}
        elif now + retry_in > claimed.give_up_at:
            values = {"status": "failed", "finished_at": now}
        else:
            values = {"status": "pending", "next_attempt_at": now + retry_in}
        error = None if outcome.error is None else outcome.error[:_ERROR_CHARS]
        result = await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claimed.id, WebhookDelivery.lease_token == claimed.token)
            .values(
                lease_token=None,
                last_status_code=outcome.status_code,
                last_error=error,
                **values,
            )
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
        self.session.add(
            WebhookAttempt(
                delivery_id=claimed.id,
                attempt=claimed.attempt,
                started_at=outcome.started_at,
                duration_ms=outcome.duration_ms,
                status_code=outcome.status_code,
                succeeded=outcome.succeeded,
                error=error,
            )
        )
        return str(values["status"])
