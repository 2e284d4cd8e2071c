"""A job's LoRAs as connectors see them: local files (from the worker's LoRA cache) with the
weight the job gives each, found by a resolver the worker hands its connectors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from emp_core.jobs.job import Job


@dataclass(frozen=True, slots=True)
class LocalLora:
    """A LoRA file on local disk and the weight a job gives it."""

    path: Path
    weight: float = 1.0
    name: str = ""  # for messages and link names: the LoRA's name or id


LoraResolver = Callable[[Job], Awaitable[list[LocalLora]]]


async def no_loras(job: Job) -> list[LocalLora]:
    """The resolver of a worker without a LoRA cache."""
    return []
