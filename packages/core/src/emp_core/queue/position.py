"""A pending job's place in line and an estimate of when it starts (issue 17).

Bounded cost, never a scan of the queue: the live workers (one ``ZRANGE`` and one ``HGETALL``
per worker, as ``/api/workers``), the classes of the services those workers serve (one ``HKEYS``
per service), one ``HGET`` per class for its requirements, one ``ZCOUNT`` per class the eligible
workers can run (O(log N) in Redis however many jobs are pending), and one ``LRANGE`` of the
service's recent run times. So the number of commands grows with workers and classes, not with
pending jobs.

- **Eligible workers**: live workers that serve the job's service and match it
  (``emp_core.jobs.matching.job_matches``: requirements, customer lists, workflow pinning).
  None: ``reason`` says that no live worker can run this job, and there is no ETA.
- **Rank**: the jobs with a better score (higher priority, then older) in every class that at
  least one eligible worker can run, across the services those workers serve: the jobs these
  workers would take first. It counts a job ahead once even when only some eligible workers can
  run it, so it is an upper bound when eligible workers differ.
- **ETA** to start: ``⌊(rank + busy) / capacity⌋ × mean run time`` of the service's latest
  completed jobs, where capacity is the eligible workers' slots and busy those running a job
  (0 when one is idle and nothing is ahead); to finish, one mean run time more. No ETA without
  run times.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from emp_core.jobs.job import Job
from emp_core.jobs.matching import class_matches, job_matches
from emp_core.jobs.requirements import Requirements
from emp_core.jobs.waiting import explain
from emp_core.queue.queue import Queue
from emp_core.redis import text
from emp_core.registry.workers import WorkerRegistry

RUNTIME_SAMPLES = 100
NO_WORKER = "no live worker can run this job"


class QueuePosition(BaseModel):
    job_id: str
    rank: int | None = None  # jobs the same workers would take first (0: next)
    eligible_workers: list[str] = []
    capacity: int = 0  # slots of the eligible workers
    busy: int = 0  # eligible workers running a job now
    mean_run_s: float | None = None
    run_samples: int = 0
    eta_s: float | None = None  # until it starts
    finish_eta_s: float | None = None  # until it ends
    reason: str | None = None  # why there is no ETA
    why: str | None = None  # with no eligible worker: what the live ones lack (jobs.waiting)


async def position(queue: Queue, job: Job) -> QueuePosition:
    """Where the pending ``job`` stands; for a job that is not pending, only ``reason``."""
    out = QueuePosition(job_id=job.id)
    if job.status.value != "pending":
        out.reason = f"the job is {job.status.value}, not waiting"
        return out
    redis, keys = queue.redis, queue.keys
    live = await WorkerRegistry(redis, keys).live()
    workers = [
        w
        for w in live
        if w.state != "draining"
        and job.service in w.services
        and job_matches(job.service, job.requirements, job.customer_id, job.workflow_id,
                        w.capabilities)
    ]  # fmt: skip
    out.eligible_workers = [w.worker_id for w in workers]
    if not workers:
        out.reason = NO_WORKER
        out.why = explain(job, [w.capabilities for w in live]).summary
        return out
    out.capacity = sum(max(1, w.slots) for w in workers)
    out.busy = sum(1 for w in workers if w.state == "busy")
    services = sorted({s for w in workers for s in w.services})
    async with redis.pipeline(transaction=False) as pipe:
        for service in services:
            pipe.hgetall(keys.classes(service))
        pipe.lrange(keys.runtimes(job.service), 0, RUNTIME_SAMPLES - 1)
        *registries, samples = await pipe.execute()
    ahead_in: list[str] = []
    for service, registry in zip(services, registries, strict=True):
        for class_id, encoded in registry.items():
            cid = text(class_id)
            if cid == job.class_id:
                ahead_in.append(cid)
                continue
            try:
                req = Requirements.model_validate_json(encoded)
            except ValueError:
                continue  # a bad stored class: the claim quarantines it
            if any(service in w.services and class_matches(service, req, w.capabilities)
                   for w in workers):  # fmt: skip
                ahead_in.append(cid)
    if job.class_id not in ahead_in:
        ahead_in.append(job.class_id)
    score = int(float(await redis.hget(keys.job(job.id), "score") or 0))
    async with redis.pipeline(transaction=False) as pipe:
        for cid in ahead_in:
            pipe.zcount(keys.pending(cid), "-inf", f"({score}")
        counts = await pipe.execute()
    out.rank = int(sum(counts))
    runs = [int(text(s)) for s in samples if text(s).isdigit()]
    out.run_samples = len(runs)
    if not runs:
        out.reason = f"no recent run times of {job.service} to estimate from"
        return out
    out.mean_run_s = round(sum(runs) / len(runs) / 1000, 3)
    # Waves of the eligible capacity: the jobs ahead and the ones running now go first.
    waves = math.floor((out.rank + out.busy) / out.capacity)
    out.eta_s = round(waves * out.mean_run_s, 3)
    out.finish_eta_s = round(out.eta_s + out.mean_run_s, 3)
    return out
