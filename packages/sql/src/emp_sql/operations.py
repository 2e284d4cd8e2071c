"""Operator actions (issue 17), admins only, each audited: retry a failed job, requeue a stuck
one, cancel or retry in bulk by filter (with a dry run), purge finished jobs older than a date.

The audit row is written first (so its id can name the action in every job event it causes:
"… (operator action #12 by ops@example.com)") and its count of touched jobs after.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from emp_core.errors import InvalidInput
from emp_core.queue.bulk import BulkActions, BulkResult, JobFilter, OnBatch
from emp_core.queue.queue import Queue
from emp_core.registry.control import CommandReply, command_and_wait
from emp_core.registry.machines import CommandType, MachineCommand
from emp_sql.audit import AuditEntry, AuditLog
from emp_sql.auth import Principal
from emp_sql.models import ArchivedJob, OperatorAction
from emp_sql.session import Database

_PURGE_BATCH = 500


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("say why: an operator action needs a reason", field="reason")
    if len(reason) > 2000:
        raise InvalidInput("is longer than 2000 characters", field="reason")
    return reason


class Operations:
    """Operator actions over one queue and its archive."""

    def __init__(self, queue: Queue, database: Database, *, batch: int = 200) -> None:
        self.queue = queue
        self.database = database
        self.actions = BulkActions(queue, batch=batch)

    async def _open(
        self, actor: Principal, action: str, reason: str, params: dict[str, Any],
        job_id: str | None = None, dry_run: bool = False,
    ) -> AuditEntry:  # fmt: skip
        actor.require_admin()
        async with self.database.session() as session:
            return await AuditLog(session).record(
                actor, action, reason=reason, params=params, job_id=job_id, dry_run=dry_run
            )

    async def _close(self, entry: AuditEntry, touched: int, params: dict[str, Any]) -> AuditEntry:
        async with self.database.session() as session:
            await session.execute(
                update(OperatorAction)
                .where(OperatorAction.id == entry.id)
                .values(touched=touched, params=params)
            )
        return entry.model_copy(update={"touched": touched, "params": params})

    @staticmethod
    def _tag(entry: AuditEntry, actor: Principal, reason: str) -> str:
        return f"{reason} (operator action #{entry.id} by {actor.email})"

    # --- one job ---------------------------------------------------------------------------------
    async def retry(
        self, actor: Principal, job_id: str, *, reason: str, priority: int | None = None
    ) -> AuditEntry:
        """A failed (dead-lettered) job back to pending with a fresh attempt budget."""
        reason = _reason(reason)
        if priority is not None and not 0 <= priority <= 1000:
            raise InvalidInput("must be from 0 to 1000", field="priority")
        job = await self.queue.get(job_id)  # NotFound when Redis has forgotten it
        if job.status.value != "failed":
            raise InvalidInput(f"job {job_id} is {job.status}; only a failed job is retried",
                               field="status")  # fmt: skip
        params = {"priority": priority}
        entry = await self._open(actor, "retry", reason, params, job_id=job_id)
        retried, _ = await self.queue.functions.retry(
            [job_id], self.queue.settings.events_maxlen, priority, self._tag(entry, actor, reason)
        )
        return await self._close(entry, retried, params)

    async def requeue(self, actor: Principal, job_id: str, *, reason: str) -> AuditEntry:
        """A stuck job (claimed, running or waiting out a retry) back to pending now."""
        reason = _reason(reason)
        entry = await self._open(actor, "requeue", reason, {}, job_id=job_id)
        try:
            previous = await self.queue.functions.requeue(
                job_id, self._tag(entry, actor, reason), self.queue.settings.events_maxlen
            )
        except Exception:
            await self._close(entry, 0, {"error": "refused"})
            raise
        return await self._close(entry, 1, {"previous_status": previous})

    # --- bulk ------------------------------------------------------------------------------------
    async def bulk(
        self,
        actor: Principal,
        action: str,
        flt: JobFilter,
        *,
        reason: str,
        dry_run: bool = False,
        priority: int | None = None,
        on_batch: OnBatch | None = None,
    ) -> tuple[AuditEntry, BulkResult]:
        """``action`` is ``retry`` or ``cancel``; a dry run counts what it would touch."""
        reason = _reason(reason)
        if action not in ("retry", "cancel"):
            raise InvalidInput("must be retry or cancel", field="action")
        params: dict[str, Any] = {"filter": flt.describe(), "priority": priority}
        entry = await self._open(actor, f"bulk_{action}", reason, params, dry_run=dry_run)
        if dry_run:
            result = await self.actions.count(flt)
        elif action == "retry":
            result = await self.actions.retry(
                flt, reason=self._tag(entry, actor, reason), priority=priority, on_batch=on_batch
            )
        else:
            result = await self.actions.cancel(
                flt, reason=self._tag(entry, actor, reason), on_batch=on_batch
            )
        params |= {
            "matched": result.matched,
            "batches": result.calls,
            "largest_batch": result.largest_batch,
            "first_jobs": result.job_ids[:20],
        }
        return await self._close(entry, result.touched, params), result

    async def purge(
        self, actor: Principal, before: datetime, *, reason: str
    ) -> tuple[AuditEntry, int, int]:
        """Forget finished jobs that ended before ``before``: archive rows and dead-lettered jobs
        still in Redis, in batches. Returns the audit entry, archive rows and Redis jobs removed."""
        reason = _reason(reason)
        if before.tzinfo is None:
            raise InvalidInput("needs a time zone (e.g. 2026-01-01T00:00:00Z)", field="before")
        params: dict[str, Any] = {"before": before.isoformat()}
        entry = await self._open(actor, "purge", reason, params)
        archived = 0
        while True:
            async with self.database.session() as session:
                ids = list(
                    (
                        await session.execute(
                            select(ArchivedJob.job_id)
                            .where(ArchivedJob.finished_at < before)
                            .limit(_PURGE_BATCH)
                        )
                    ).scalars()
                )
                if not ids:
                    break
                await session.execute(delete(ArchivedJob).where(ArchivedJob.job_id.in_(ids)))
            archived += len(ids)
        dead = await self.actions.purge_dead(before)
        params |= {"archive_rows": archived, "redis_jobs": dead.touched}
        return await self._close(entry, archived + dead.touched, params), archived, dead.touched

    # --- machines --------------------------------------------------------------------------------
    async def machine(
        self, actor: Principal, machine_id: str, command: MachineCommand, *, timeout_s: float = 5.0
    ) -> CommandReply | None:
        """Send a command to a machine's supervisor and wait for its answer (None: it did not
        answer). Drains and restarts are audited; reading a log is not."""
        actor.require_admin()
        params: dict[str, Any] = {"machine_id": machine_id, **command.model_dump(mode="json")}
        entry = None
        if command.type != CommandType.LOGS:
            entry = await self._open(actor, f"machine_{command.type.value}", "", params)
        answer = await command_and_wait(
            self.queue.redis, self.queue.keys, machine_id, command, timeout_s=timeout_s
        )
        if entry is not None:
            outcome = "no answer" if answer is None else answer.message
            await self._close(entry, int(bool(answer and answer.ok)), params | {"answer": outcome})
        return answer

    async def history(self, actor: Principal, job_id: str) -> list[AuditEntry]:
        actor.require_admin()
        async with self.database.session() as session:
            return await AuditLog(session).for_job(job_id)

    async def recent(self, actor: Principal, limit: int = 50) -> list[AuditEntry]:
        actor.require_admin()
        async with self.database.session() as session:
            return await AuditLog(session).recent(limit=limit)


__all__ = ["Operations"]
