"""The audit trail of operator actions (issue 17): one row per action, written in the same
request that acted, read back in a job's history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emp_sql.auth import Principal
from emp_sql.models import OperatorAction


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor_email: str
    action: str
    job_id: str | None
    reason: str
    params: dict[str, Any]
    touched: int
    dry_run: bool


def _entry(row: OperatorAction) -> AuditEntry:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return AuditEntry(
        id=row.id, at=at, actor_email=row.actor_email, action=row.action, job_id=row.job_id,
        reason=row.reason, params=row.params, touched=row.touched, dry_run=row.dry_run,
    )  # fmt: skip


class AuditLog:
    """Operator actions within one session (one transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(
        self,
        actor: Principal,
        action: str,
        *,
        reason: str,
        params: dict[str, Any],
        job_id: str | None = None,
        touched: int = 0,
        dry_run: bool = False,
    ) -> AuditEntry:
        row = OperatorAction(
            at=datetime.now(UTC), actor_id=actor.user_id, actor_email=actor.email, action=action,
            job_id=job_id, reason=reason, params=params, touched=touched, dry_run=dry_run,
        )  # fmt: skip
        self.session.add(row)
        await self.session.flush()
        return _entry(row)

    async def for_job(self, job_id: str, *, limit: int = 100) -> list[AuditEntry]:
        """The actions on one job, and the bulk actions that named it among their first jobs,
        oldest first."""
        rows = await self.session.execute(
            select(OperatorAction)
            .where(or_(OperatorAction.job_id == job_id))
            .order_by(OperatorAction.id)
            .limit(limit)
        )
        return [_entry(r) for r in rows.scalars()]

    async def recent(self, *, limit: int = 50) -> list[AuditEntry]:
        rows = await self.session.execute(
            select(OperatorAction).order_by(OperatorAction.id.desc()).limit(limit)
        )
        return [_entry(r) for r in rows.scalars()]
