"""The ``noop`` connector: does nothing and returns at once.

A job's whole cost on a ``noop`` worker is the queue's and the worker's own: claim, report, claim
the next. ``make bench-peers`` drains it against the peers' no-op tasks; on a new deployment,
``emp-worker --service noop`` shows that workers claim and complete before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import JsonValue

from emp_core.jobs.job import Job
from emp_worker.connectors.base import JobContext


@dataclass(frozen=True, slots=True)
class NoopConnector:
    """Returns ``None`` for every job, without a progress report."""

    service: str = "noop"

    async def run(self, job: Job, ctx: JobContext) -> JsonValue:
        return None
