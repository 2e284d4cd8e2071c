"""The connector seam: what the worker asks of the code that does a job's work.

A connector serves one service. The worker calls ``run(job, ctx)`` once per claimed job, in a task
it may cancel at any ``await`` (cancel request, lease lost, shutdown, timeout); the connector lets
``asyncio.CancelledError`` pass. The return value is the job's result and must be JSON.

To fail, raise: ``Retry`` or ``Abort`` say what should happen, any other exception's message is
classified by the worker (``emp_worker.failures.classify``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import JsonValue

from emp_core.jobs.job import Job


@runtime_checkable
class JobContext(Protocol):
    """What a running job may tell the worker."""

    @property
    def worker_id(self) -> str: ...

    @property
    def lora_paths(self) -> Mapping[str, Path]:
        """The job's LoRA files on local disk by sha256 (``job.loras`` gives each one's name and
        weight), downloaded and verified before ``run`` is called; read-only, shared with other
        jobs."""

    async def progress(self, pct: float, message: str = "", *, preview: str | None = None) -> None:
        """Report progress, 0-100, with a short message for people and optionally a small
        preview image (a ``data:image/`` URL of at most 32 KiB) for the progress event."""


@runtime_checkable
class Connector(Protocol):
    """Runs jobs of one service."""

    @property
    def service(self) -> str: ...

    async def run(self, job: Job, ctx: JobContext) -> JsonValue:
        """Do the job's work and return its result (JSON)."""


class Retry(Exception):
    """Fail this attempt and retry, after ``delay_s`` seconds (None: the queue's backoff)."""

    def __init__(self, message: str, *, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.delay_s = delay_s

    def __repr__(self) -> str:
        return f"Retry({self.message!r}, delay_s={self.delay_s!r})"


class Abort(Exception):
    """Fail the job for good: retrying cannot help (a malformed payload, say)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"Abort({self.message!r})"


@dataclass(frozen=True, slots=True)
class LocalLora:
    """One LoRA of a job as a connector applies it: a file on local disk (from the worker's LoRA
    cache) and the job's weight for it."""

    path: Path
    weight: float = 1.0
    name: str = ""  # for messages and link names: the LoRA's name


LoraResolver = Callable[[Job, "JobContext"], Awaitable[list[LocalLora]]]


async def cached_loras(job: Job, ctx: JobContext) -> list[LocalLora]:
    """The job's LoRAs from the files the worker's LoRA cache fetched before the connector ran
    (``ctx.lora_paths``, by sha256), with the job's names and weights, in the job's order."""
    paths: Mapping[str, Path] = getattr(ctx, "lora_paths", None) or {}
    out = []
    for ref in job.loras:
        path = paths.get(ref.sha256)
        if path is None:
            raise FileNotFoundError(f"LoRA {ref.name} not found in this worker's LoRA cache")
        out.append(LocalLora(path, ref.weight, ref.name))
    return out


class InvalidParameter(ValueError):
    """A job's parameter the worker cannot take (only it could know: its model's limits, a
    workflow its ComfyUI refuses). The message, ``invalid parameter payload.FIELD: ...``, is
    classified by the error patterns as not retryable."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid parameter payload.{field}: {problem}")
        self.field = field


@dataclass
class RecordingContext:
    """An in-memory ``JobContext`` that keeps every progress report: for tests, and for running a
    connector outside a worker."""

    worker_id: str = "local"
    lora_paths: dict[str, Path] = field(default_factory=dict)
    reports: list[tuple[float, str]] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)

    async def progress(self, pct: float, message: str = "", *, preview: str | None = None) -> None:
        self.reports.append((pct, message))
        if preview is not None:
            self.previews.append(preview)
