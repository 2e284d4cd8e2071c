"""Starting ``emp-machine`` processes in tests and watching them from outside (a unique module
name: the tests/ folders of several packages share one import path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from emp_core.settings import QueueSettings


def machine_env(settings: QueueSettings | None, **extra: str) -> dict[str, str]:
    """An environment for ``emp-machine`` on the test's Redis and queue: fast status reports,
    fast restarts, quick simulation steps; none of the shell's EMP_* or OTEL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMP_", "OTEL_"))}
    if settings is not None:
        env.update(EMP_REDIS_URL=settings.redis_url, EMP_QUEUE=settings.queue)
    env.update(
        EMP_STATUS_INTERVAL_SECONDS="0.2",
        EMP_RESTART_BACKOFF_SECONDS="0.1",
        EMP_RETRY_BASE_SECONDS="0.01",
        EMP_RETRY_AVOID_GRACE_SECONDS="0",
        EMP_SIMULATION_STEP_TIME="0.05",
        EMP_LORA_CACHE_DIR=str(Path(tempfile.gettempdir()) / "emp-test-loras"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Machines:
    """Starts machines in process groups of their own and kills what is left at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, env: dict[str, str], *args: str, name: str = "machine", cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "emp_machine.main", *args],
            env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.started.append(process)
        return process

    def log(self, name: str = "machine") -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_all(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the machine and its workers
            process.wait()


@contextmanager
def machines_in(log_dir: Path) -> Iterator[Machines]:
    machines = Machines(log_dir)
    try:
        yield machines
    finally:
        machines.kill_all()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 20.0, every: float = 0.05
) -> None:
    """Wait until ``check`` holds; fail after ``within`` seconds. For watching processes."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - another process's state: no event to await
            await asyncio.sleep(every)


async def wait_exit(process: subprocess.Popen[bytes], within: float = 20.0) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), within)


def proc_environ(pid: int) -> dict[str, str]:
    """The environment a process was started with (Linux ``/proc``)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    )
