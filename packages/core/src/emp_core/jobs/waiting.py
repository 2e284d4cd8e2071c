"""Why a pending job waits: which live workers could run it, and if none, what none of them has.

Pure, over the registry's ``WorkerCapabilities`` and the matching rules of ``matching.py`` (the
same rules the Lua claim applies), so the studio's answer agrees with what a claim would do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import Job
from emp_core.jobs.matching import job_admitted, unmet


@dataclass(frozen=True, slots=True)
class WaitReason:
    able: list[str] = field(default_factory=list)  # ids of live workers that could run it
    # Requirements that no live worker meets (each met by none); empty when some worker is able.
    unmet_by_all: list[str] = field(default_factory=list)
    # Live workers that meet the requirements but whose customer/workflow rules keep the job out.
    not_admitted: list[str] = field(default_factory=list)
    workers: int = 0  # live workers looked at

    @property
    def summary(self) -> str:
        if self.able:
            n = len(self.able)
            return f"{n} live worker{'s' if n != 1 else ''} can run it; it runs when one is free"
        if not self.workers:
            return "no worker is live: it runs when one registers"
        if self.unmet_by_all:
            return "no live worker meets: " + ", ".join(self.unmet_by_all)
        if self.not_admitted:
            return "the workers that could run it are reserved for other customers or workflows"
        return "no single live worker meets every requirement at once"


def explain(job: Job, workers: Iterable[WorkerCapabilities]) -> WaitReason:
    """Which of ``workers`` could run ``job``, and otherwise the requirements none of them meets."""
    live = list(workers)
    able: list[str] = []
    not_admitted: list[str] = []
    missing_per_worker: list[list[str]] = []
    for caps in live:
        missing = unmet(job.service, job.requirements, caps)
        if missing:
            missing_per_worker.append(missing)
        elif job_admitted(job.customer_id, job.workflow_id, caps):
            able.append(caps.worker_id)
        else:
            not_admitted.append(caps.worker_id)
    unmet_by_all: list[str] = []
    if not able and not not_admitted and missing_per_worker:
        # Among the workers of the job's service (a worker of another service says nothing
        # about the job's other requirements); "service X" when there is none.
        serving = [c for c in live if job.service in c.services]
        if not serving:
            unmet_by_all = [f"service {job.service}"]
        else:
            lists = [unmet(job.service, job.requirements, c) for c in serving]
            common = set.intersection(*(set(m) for m in lists))
            unmet_by_all = [m for m in lists[0] if m in common]  # in the order people read them
    return WaitReason(able, unmet_by_all, not_admitted, len(live))
