"""The archive of finished jobs: an idempotent upsert keyed by job id, and lookups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from emp_core.jobs.job import Job
from emp_sql.models import ArchivedJob

_UPDATED = ("customer_id", "service", "status", "seq", "queue", "created_at", "finished_at",
            "error", "data", "events")  # fmt: skip


def archive_row(
    job: Job, *, seq: int | None, queue: str, events: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The archive row of one job, as the upsert takes it; ``events`` its stream (forensics)."""
    return {
        "job_id": job.id,
        "customer_id": job.customer_id,
        "service": job.service,
        "status": job.status.value,
        "seq": seq,
        "queue": queue,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "error": job.error,
        "data": job.model_dump(mode="json"),
        "events": events,
    }


class JobArchiveRepository:
    """Archived jobs within one session (one transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the rows, or overwrite the ones already there: running it twice, or from two
        processes at once, leaves the same table."""
        if not rows:
            return
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(ArchivedJob).values(list(rows))
        stmt = stmt.on_conflict_do_update(
            index_elements=[ArchivedJob.job_id],
            set_={name: getattr(stmt.excluded, name) for name in _UPDATED},
        )
        await self.session.execute(stmt)

    async def get(self, job_id: str) -> Job | None:
        row = await self.session.get(ArchivedJob, job_id)
        return None if row is None else Job.model_validate(row.data)

    async def get_with_events(self, job_id: str) -> tuple[Job, list[dict[str, Any]]] | None:
        """The job and its archived event stream (empty for jobs archived before it was kept)."""
        row = await self.session.get(ArchivedJob, job_id)
        if row is None:
            return None
        return Job.model_validate(row.data), list(row.events or [])

    async def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        ids = list(job_ids)
        if not ids:
            return {}
        result = await self.session.execute(
            select(ArchivedJob.job_id, ArchivedJob.data).where(ArchivedJob.job_id.in_(ids))
        )
        return {job_id: Job.model_validate(data) for job_id, data in result.all()}

    async def present(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these jobs are archived already."""
        ids = list(job_ids)
        if not ids:
            return set()
        result = await self.session.execute(
            select(ArchivedJob.job_id).where(ArchivedJob.job_id.in_(ids))
        )
        return set(result.scalars())
