"""Jobs as their owners see them: submit (idempotently), read, list and cancel, each checked
against the caller. Redis answers for live jobs and the SQL archive for jobs Redis has forgotten.

This is what the HTTP API (and later the studio) calls; it holds the rules they share: a user sees
only jobs whose ``customer_id`` is their user id and an admin sees every job; another user's job
is reported as missing, so its existence does not leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from emp_core.errors import Conflict, InvalidInput, NotFound
from emp_core.jobs.job import Job, JobSpec, JobStatus
from emp_core.queue.idempotency import IdempotencyRecord
from emp_core.queue.queue import Queue
from emp_core.queue.queues import Queues
from emp_core.registry.workers import ServedCache
from emp_sql.auth import Forbidden, Principal
from emp_sql.job_archive import JobArchiveRepository
from emp_sql.listing import MAX_PAGE, JobPage, Listing
from emp_sql.session import Database

__all__ = ["MAX_PAGE", "JobCatalog", "JobPage", "Submitted"]


@dataclass(frozen=True, slots=True)
class Submitted:
    job: Job
    replayed: bool = False
    warnings: tuple[str, ...] = ()


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"job {job_id} does not exist", field="job_id")


class JobCatalog:
    """The jobs of a deployment's queues, seen through a principal.

    A submit goes to its service's queue (``Queues.for_service``); reading or cancelling one job
    asks each queue in turn (N queues, at most N reads), then the archive. Lists merge every
    queue's per-customer index by submit time, with one position per queue in the cursor
    (``emp_sql.listing``)."""

    def __init__(self, queue: Queue, database: Database, *, queues: Queues | None = None) -> None:
        self.queue = queue
        self.queues = queues or Queues(queue.redis, queue.settings, [queue.keys.queue])
        self.redis = queue.redis
        self.keys = queue.keys
        self.database = database
        self._served = ServedCache()  # the submit's "no worker serves this" warning

    # --- submit ----------------------------------------------------------------------------------
    def _owned_spec(self, spec: JobSpec, owner: Principal) -> JobSpec:
        """The job with ``customer_id`` set to the caller: a user submits for themself; an admin
        may name another customer."""
        if spec.customer_id is None:
            return spec.model_copy(update={"customer_id": owner.user_id})
        if spec.customer_id != owner.user_id and not owner.is_admin:
            raise InvalidInput(
                "is set from your token; leave it out (only admins submit for others)",
                field="customer_id",
            )
        return spec

    async def submit(
        self,
        spec: JobSpec,
        owner: Principal,
        *,
        idempotency_key: str | None = None,
        traceparent: str = "",
    ) -> Submitted:
        """Validate and enqueue a job for ``owner``. With an idempotency key, a repeated request
        returns the job of the first one instead of submitting again."""
        spec = self._owned_spec(spec, owner)
        queue = self.queues.for_service(spec.service)
        args = queue.prepare(spec, traceparent=traceparent)
        if idempotency_key is None:
            job = await queue.submit_prepared(args)
        else:
            # Without the LoRAs' signed URLs: they are minted afresh for every request, and a
            # retry with the same key must still be recognised as the same request.
            record = IdempotencyRecord.of(
                owner.user_id,
                idempotency_key,
                spec.model_dump(mode="json", exclude={"loras": {"__all__": {"url"}}}),
            )
            job_id, replayed = await self.queues.submit_once(args, record, archived=self._archived)
            if replayed:
                # Redis may have forgotten the earlier job (retention): then the archive has it.
                return Submitted(await self._load(job_id), replayed=True)
            job = await queue.get(job_id)
        warning = await self._served.warning(self.redis, queue.keys, job.service)
        return Submitted(job, warnings=(warning,) if warning else ())

    async def _archived(self, job_id: str) -> bool:
        async with self.database.session() as session:
            return bool(await JobArchiveRepository(session).present([job_id]))

    # --- read ------------------------------------------------------------------------------------
    async def _load(self, job_id: str) -> Job:
        """The job from Redis, or from the archive once Redis has forgotten it."""
        try:
            return await self.queues.get(job_id)
        except NotFound:
            pass
        async with self.database.session() as session:
            job = await JobArchiveRepository(session).get(job_id)
        if job is None:
            raise _not_found(job_id)
        return job

    async def get(self, job_id: str, viewer: Principal) -> Job:
        """The job, when ``viewer`` may see it; ``NotFound`` otherwise (also for other users')."""
        job = await self._load(job_id)
        if not viewer.may_see(job.customer_id):
            raise _not_found(job_id)
        return job

    async def list(
        self,
        viewer: Principal,
        *,
        customer_id: str | None = None,
        status: JobStatus | None = None,
        service: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """A customer's jobs in every queue, newest first, ``limit`` at a time (the caller's own
        unless an admin names another customer). Read from each queue's ``Keys.customer_jobs``,
        never a SCAN; ``cursor`` is the ``next_cursor`` of the previous page (``listing``)."""
        owner = customer_id or viewer.user_id
        if owner != viewer.user_id and not viewer.is_admin:
            raise Forbidden("only admins list another customer's jobs")
        listing = Listing(
            self.redis, self.database, list(self.queues), [owner], status=status,
            service=service, limit=limit,
        )  # fmt: skip
        return await listing.page(cursor)

    async def list_merged(
        self,
        viewer: Principal,
        customer_ids: Iterable[str],
        *,
        status: JobStatus | None = None,
        service: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Several customers' jobs in every queue merged newest first, for admins (everyone's,
        given every user id); pages and cursors as in ``list``. Each round reads every
        customer's index in every queue in one pipeline, so the cost grows with the number of
        customers: right for an admin's view over a studio's users, not for a million customers
        (that would want a queue-wide index)."""
        if not viewer.is_admin:
            raise Forbidden("only admins list other customers' jobs")
        listing = Listing(
            self.redis, self.database, list(self.queues), customer_ids, status=status,
            service=service, limit=limit,
        )  # fmt: skip
        return await listing.page(cursor)

    # --- cancel ----------------------------------------------------------------------------------
    async def cancel(self, job_id: str, viewer: Principal) -> Job:
        """Cancel a job that has not finished; returns it as it is afterwards."""
        job = await self.get(job_id, viewer)
        if job.is_terminal:
            raise Conflict(f"job {job_id} is already {job.status}", field="status")
        who = "an admin" if viewer.is_admin and job.customer_id != viewer.user_id else "its owner"
        await self.queues.cancel(job_id, f"cancelled by {who}")
        return await self._load(job_id)
