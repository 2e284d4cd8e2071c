"""Keeps one process per slot running, as PM2 does for the original machines.

Each slot's process is started, and when it exits it is started again after an exponential
backoff (``RestartPolicy``); a slot that keeps crashing soon after each start is given up.
``stop()`` forwards SIGTERM to every process, so workers stop claiming and let their jobs finish
within the grace period (or hand them back to the queue); one that is still running after the
grace period gets a second SIGTERM (a worker then hands its jobs back at once) and, a few
seconds later, SIGKILL.

Why not a library: supervisord and circus are daemons of their own with their own config and
control protocols, honcho and foreman have no restart policy, and no maintained asyncio
library supervises child processes. What is needed here is ~200 lines over
``asyncio.create_subprocess_exec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from emp_core.registry.machines import MachineWorker, SlotState
from emp_machine.config import Slot

logger = logging.getLogger(__name__)

# How long a process gets to exit after the second SIGTERM before SIGKILL, and the margin a
# worker gets beyond its grace period to hand its jobs back (seconds).
_UNWIND_SECONDS = 10.0
# The last lines of each worker's output kept in memory, served on request (issue 17).
TAIL_LINES = 500


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Exponential backoff between restarts: ``base_s`` doubled per crash in a row, capped at
    ``cap_s``, spread by up to ``jitter`` (a fraction) either way so slots that crashed together
    do not restart together. A process that ran ``stable_s`` before exiting starts a new row (a
    worker that merely crashed once restarts after ``base_s``); after ``max_restarts`` crashes in
    a row the slot is given up.

    The cap is well under the 30 s recovery bound: a restarted worker is capacity, and its jobs
    come back through the reaper (lease + reap interval) whatever the backoff."""

    base_s: float = 1.0
    cap_s: float = 10.0
    max_restarts: int = 10
    stable_s: float = 10.0
    jitter: float = 0.0

    def delay(self, crashes_in_row: int, rand: Callable[[], float] = random.random) -> float | None:
        """Seconds before the next start, or None when the slot is to be given up."""
        if crashes_in_row > self.max_restarts:
            return None
        delay = float(min(self.cap_s, self.base_s * 2 ** max(0, crashes_in_row - 1)))
        return delay * (1 + self.jitter * (2 * rand() - 1))


@dataclass(eq=False)
class WorkerProcess:
    """One slot and the process running in it now, if any."""

    slot: Slot
    state: SlotState = SlotState.STARTING
    pid: int | None = None
    restarts: int = 0
    crashes_in_row: int = 0
    last_exit_code: int | None = None
    started_at: datetime | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    started_mono: float = 0.0
    # The last lines of its output (stdout and stderr), bounded; copied to the machine's stderr.
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES), repr=False)
    restart_requested: bool = False

    def snapshot(self) -> MachineWorker:
        return MachineWorker(
            worker_id=self.slot.worker_id,
            service=self.slot.service,
            index=self.slot.index,
            gpu=self.slot.gpu,
            state=self.state,
            pid=self.pid,
            restarts=self.restarts,
            last_exit_code=self.last_exit_code,
            started_at=self.started_at,
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Runs ``command`` once per slot with ``env_for(slot)`` as its whole environment."""

    def __init__(
        self,
        slots: Sequence[Slot],
        *,
        command: Sequence[str],
        env_for: Callable[[Slot], Mapping[str, str]],
        policy: RestartPolicy,
        grace_s: float,
        on_change: Callable[[], None] = lambda: None,
        unwind_s: float = _UNWIND_SECONDS,
    ) -> None:
        self.workers = [WorkerProcess(slot) for slot in slots]
        self.command = list(command)
        self.env_for = env_for
        self.policy = policy
        self.grace_s = grace_s
        self.unwind_s = unwind_s  # after the grace: how long SIGTERM'd processes get, then SIGKILL
        self.on_change = on_change
        self._stopping = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Keep every slot running until ``stop()`` has stopped them all (or every slot has been
        given up)."""
        try:
            await asyncio.gather(*(self._keep(w) for w in self.workers))
        finally:
            if self._shutdown is not None:
                await self._shutdown
            for w in self.workers:  # cancelled from outside: leave no orphan behind
                if w.alive:
                    self._signal(w, signal.SIGKILL)

    def stop(self) -> None:
        """Begin the shutdown (SIGTERM to all, SIGKILL past the grace period); a second call
        sends the second SIGTERM at once, so workers hand their jobs back without waiting.
        Call it from the event loop (a signal handler added with ``loop.add_signal_handler``)."""
        if self._shutdown is None:
            self._stopping.set()
            self._shutdown = asyncio.get_running_loop().create_task(self._stop_all())
        else:
            logger.info("second stop: workers hand their running jobs back to the queue now")
            self._signal_all(signal.SIGTERM)

    # --- one slot --------------------------------------------------------------------------------
    async def _keep(self, w: WorkerProcess) -> None:
        while not self._stopping.is_set():
            code = await self._run_once(w)
            if self._stopping.is_set():
                break
            ran = time.monotonic() - w.started_mono
            if w.restart_requested:  # an operator's restart: no crash, no backoff
                w.restart_requested = False
                w.restarts += 1
                logger.info("worker %s restarted on request", w.slot.worker_id)
                continue
            w.crashes_in_row = 1 if ran >= self.policy.stable_s else w.crashes_in_row + 1
            delay = self.policy.delay(w.crashes_in_row)
            what = "could not start" if code is None else describe_exit(code)
            if delay is None:
                w.state = SlotState.FAILED
                logger.error(
                    "worker %s %s after %.1f s, its %d%s crash in a row; giving it up",
                    w.slot.worker_id, what, ran, w.crashes_in_row,
                    _ordinal(w.crashes_in_row),
                )  # fmt: skip
                self.on_change()
                return
            w.restarts += 1
            w.state = SlotState.BACKOFF
            logger.warning(
                "worker %s %s after %.1f s; restart %d in %g s",
                w.slot.worker_id, what, ran, w.restarts, delay,
            )  # fmt: skip
            self.on_change()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        w.state = SlotState.STOPPED
        self.on_change()

    async def _run_once(self, w: WorkerProcess) -> int | None:
        """Start the slot's process and wait for it; its exit code, None if it did not start."""
        w.state = SlotState.STARTING
        w.started_mono = time.monotonic()
        w.started_at = datetime.now(UTC)
        try:
            # Same process group as the machine: a signal to the group reaches every worker.
            w.process = await asyncio.create_subprocess_exec(
                *self.command, env=dict(self.env_for(w.slot)), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        except OSError as exc:
            logger.error("worker %s could not start %s: %s", w.slot.worker_id, self.command, exc)
            w.last_exit_code = None
            return None
        w.pid = w.process.pid
        w.state = SlotState.RUNNING
        logger.info("worker %s started as pid %d", w.slot.worker_id, w.pid)
        self.on_change()
        if self._stopping.is_set():  # stop() came while this one was starting
            w.state = SlotState.STOPPING
            self._signal(w, signal.SIGTERM)
        reader = asyncio.create_task(_copy_output(w), name=f"{w.slot.worker_id}-output")
        code = await w.process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), 2.0)
        w.last_exit_code, w.pid = code, None
        if self._stopping.is_set():
            logger.info("worker %s %s", w.slot.worker_id, describe_exit(code))
        return code

    # --- operator commands (issue 17) ----------------------------------------------------------
    def find(self, worker_id: str) -> WorkerProcess | None:
        return next((w for w in self.workers if w.slot.worker_id == worker_id), None)

    def restart(self, worker_id: str) -> bool:
        """Restart one worker: SIGTERM (it finishes or hands back its job), then started again at
        once. False when no such worker is running."""
        w = self.find(worker_id)
        if w is None or not w.alive or self._stopping.is_set():
            return False
        w.restart_requested = True
        w.state = SlotState.STOPPING
        self._signal(w, signal.SIGTERM)
        self.on_change()
        return True

    def tail(self, worker_id: str, lines: int) -> list[str] | None:
        w = self.find(worker_id)
        return None if w is None else list(w.tail)[-lines:]

    # --- shutdown --------------------------------------------------------------------------------
    def _signal(self, w: WorkerProcess, sig: signal.Signals) -> None:
        if w.process is not None and w.alive:
            with contextlib.suppress(ProcessLookupError):
                w.process.send_signal(sig)

    def _signal_all(self, sig: signal.Signals) -> None:
        for w in self.workers:
            if w.alive:
                if sig == signal.SIGTERM:
                    w.state = SlotState.STOPPING
                self._signal(w, sig)
        self.on_change()

    async def _wait_all(self, within_s: float) -> bool:
        """Whether every process exited within ``within_s`` seconds."""
        live = [w.process.wait() for w in self.workers if w.process is not None and w.alive]
        if not live:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await asyncio.gather(*live)
        return not any(w.alive for w in self.workers)

    async def _stop_all(self) -> None:
        live = sum(1 for w in self.workers if w.alive)
        logger.info(
            "stopping %d worker%s: %g s to finish running jobs",
            live, "" if live == 1 else "s", self.grace_s,
        )  # fmt: skip
        self._signal_all(signal.SIGTERM)
        if await self._wait_all(self.grace_s + self.unwind_s):
            return
        logger.warning("workers still running after the grace period: sending SIGTERM again")
        self._signal_all(signal.SIGTERM)
        if await self._wait_all(self.unwind_s):
            return
        stuck = ", ".join(w.slot.worker_id for w in self.workers if w.alive)
        logger.error("workers %s did not stop: killing them", stuck)
        self._signal_all(signal.SIGKILL)
        await self._wait_all(self.unwind_s)


async def _copy_output(w: WorkerProcess) -> None:
    """Read a worker's output line by line into its tail and onto the machine's stderr."""
    stream = w.process.stdout if w.process is not None else None
    if stream is None:
        return
    prefix = f"[{w.slot.worker_id}] ".encode()
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):  # a line over the limit: drop it
            continue
        if not line:
            return
        w.tail.append(line.decode(errors="replace").rstrip("\n"))
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.buffer.write(prefix + line)
            sys.stderr.buffer.flush()


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
