"""Job forensics as a viewer may see them (issue 17): the attempts and the timeline from Redis
while it holds the job, from the SQL archive after; the operator actions on the job for admins.

An owner sees their own job's attempts and timeline without the fleet's internals (worker,
machine and error-pattern ids) and without the audit trail; anyone else's job is 404, as
everywhere (``JobCatalog.get``).
"""

from __future__ import annotations

from pydantic import BaseModel

from emp_core.errors import NotFound
from emp_core.jobs.events import JobEvent, replay
from emp_core.jobs.forensics import Forensics, forensics
from emp_core.queue.position import QueuePosition, position
from emp_sql.audit import AuditEntry, AuditLog
from emp_sql.auth import Principal
from emp_sql.catalog import JobCatalog
from emp_sql.job_archive import JobArchiveRepository


class JobForensics(BaseModel):
    forensics: Forensics
    position: QueuePosition | None = None  # a pending job's place in line and ETA
    actions: list[AuditEntry] | None = None  # admins only


def _redacted(f: Forensics) -> Forensics:
    attempts = [
        a.model_copy(update={"worker_id": None, "machine_id": None, "pattern_id": None})
        for a in f.attempts
    ]
    events = [e.model_copy(update={"worker_id": None, "machine_id": None}) for e in f.events]
    return f.model_copy(update={"attempts": attempts, "events": events})


class ForensicsReader:
    def __init__(self, catalog: JobCatalog) -> None:
        self.catalog = catalog
        self.queue = catalog.queue
        self.database = catalog.database

    async def read(self, job_id: str, viewer: Principal) -> JobForensics:
        job = await self.catalog.get(job_id, viewer)  # NotFound for another user's job
        queue = await self.catalog.queues.holding(job_id)  # a deployment may name several
        try:
            live = await queue.get(job_id)
        except NotFound:
            live = None
        place = None
        if live is not None:
            events = await replay(queue.redis, queue.keys, job_id)
            result = forensics(live, events, source="redis")
            if live.status.value == "pending":
                place = await position(queue, live)
        else:
            async with self.database.session() as session:
                found = await JobArchiveRepository(session).get_with_events(job_id)
            raw = found[1] if found else []
            archived = [JobEvent.from_fields(e.get("event_id", ""), job_id, e) for e in raw]
            result = forensics(job, archived, source="archive")
        if not viewer.is_admin:
            if place is not None:
                place = place.model_copy(update={"eligible_workers": []})
            return JobForensics(forensics=_redacted(result), position=place)
        async with self.database.session() as session:
            actions = await AuditLog(session).for_job(job_id)
        return JobForensics(forensics=result, position=place, actions=actions)

    async def position(self, job_id: str, viewer: Principal) -> QueuePosition:
        """A job's place in line (``reason`` only, for a job that is not pending)."""
        job = await self.catalog.get(job_id, viewer)
        place = await position(await self.catalog.queues.holding(job_id), job)
        return place if viewer.is_admin else place.model_copy(update={"eligible_workers": []})
