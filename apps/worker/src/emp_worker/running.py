"""One job a worker slot is running: its connector task, why it is being stopped, and the
context the connector reports progress through."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import JsonValue

from emp_core.queue.queue import ClaimedJob

if TYPE_CHECKING:
    from emp_worker.transport.base import Transport

logger = logging.getLogger(__name__)

StopReason = Literal["cancelled", "lost", "shutdown", "timeout"]

# A stopped job's task is cancelled again at this interval until it ends (seconds), see
# ``RunningJob.stop``.
_RECANCEL_SECONDS = 0.25


@dataclass(eq=False)
class RunningJob:
    """A job a slot is running, and why it is being stopped, if it is."""

    claimed: ClaimedJob
    task: asyncio.Task[JsonValue]
    started: float = field(default_factory=time.monotonic)
    stop_reason: StopReason | None = None
    detail: str = ""
    slot: int | None = None  # the worker slot running it (its next claim is that slot's)

    _nagger: asyncio.Task[None] | None = None

    def stop(self, reason: StopReason, detail: str = "") -> None:
        """Cancel the connector; the first reason given is the one reported.

        On Python 3.11 a cancellation that arrives just as an inner ``asyncio.wait_for`` finishes
        is lost (https://github.com/python/cpython/issues/86296), and redis-py runs one per
        command, so a connector reporting progress can miss it. The task is therefore cancelled
        again every ``_RECANCEL_SECONDS`` until it has ended."""
        if self.stop_reason is None:
            self.stop_reason, self.detail = reason, detail
        if self.task.done():
            return
        self.task.cancel()
        if self._nagger is None:
            self._nagger = asyncio.get_running_loop().create_task(self._keep_cancelling())

    async def _keep_cancelling(self) -> None:
        while not self.task.done():
            await asyncio.wait({self.task}, timeout=_RECANCEL_SECONDS)
            if not self.task.done():
                self.task.cancel()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class QueueJobContext:
    """The ``JobContext`` of a job claimed from the queue: progress goes through the transport."""

    def __init__(self, transport: Transport, claimed: ClaimedJob, worker_id: str) -> None:
        self._transport = transport
        self._claimed = claimed
        self.worker_id = worker_id
        self.lora_paths: dict[str, Path] = {}  # filled by the LoRA cache before the connector runs

    async def progress(self, pct: float, message: str = "", *, preview: str | None = None) -> None:
        await self._transport.progress(
            self._claimed, min(100.0, max(0.0, float(pct))), message, preview=preview
        )
