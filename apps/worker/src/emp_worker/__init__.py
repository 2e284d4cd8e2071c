"""The EMP worker: claims jobs it can run from the queue and drives a connector per service."""

from emp_worker.config import WorkerSettings
from emp_worker.reporting import WorkerStats
from emp_worker.worker import Worker

__all__ = ["Worker", "WorkerSettings", "WorkerStats"]
