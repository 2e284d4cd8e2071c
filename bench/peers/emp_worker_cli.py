"""``emp-worker`` with the ``noop`` service's connector swapped for one that records each job's
start (``record.py``), as each peer's worker CLI imports the harness's task module. Everything
else is the worker CLI's own ``main``."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import JsonValue

from bench.peers.record import record
from emp_core.jobs.job import Job

# The bench runs the worker app's CLI, as it runs each peer's: it is the thing measured.
from emp_worker.connectors import JobContext, register_connector  # noqa: TID251


@dataclass(frozen=True, slots=True)
class RecordingNoop:
    service: str = "noop"

    async def run(self, job: Job, ctx: JobContext) -> JsonValue:
        record()
        return None


if __name__ == "__main__":
    from emp_worker.main import main  # noqa: TID251

    register_connector("noop", lambda settings: RecordingNoop())
    main()
