"""What every system's no-op task does: append the time it started to a file of its process.

One fixed-width line per job (``time.monotonic_ns()``, CLOCK_MONOTONIC: one clock for every
process of the machine, so a worker's stamps compare with the enqueuer's). Appending 20 bytes is
one ``write`` system call, a few microseconds: a round trip to Redis per job would cost more than
the no-op jobs themselves. The harness counts jobs by the files' sizes. Standard library only: the
peers' virtual environment imports it too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

LINE = 20  # 19 digits and a newline
ENV = "BENCH_RECORD_DIR"

_fd: int | None = None
_pid = 0


def record() -> None:
    """Note that a job started now, in this process's file under ``$BENCH_RECORD_DIR``."""
    global _fd, _pid
    pid = os.getpid()
    if _fd is None or pid != _pid:  # first job, or a process forked after one (Dramatiq, Celery)
        _fd = os.open(
            Path(os.environ[ENV]) / f"{pid}.rec", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        _pid = pid
    os.write(_fd, b"%019d\n" % time.monotonic_ns())


def count(directory: Path) -> int:
    """Jobs recorded so far, every process together."""
    total = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(".rec"):
                total += entry.stat().st_size // LINE
    return total


def stamps(directory: Path) -> list[int]:
    """Every recorded start, in nanoseconds, sorted."""
    out: list[int] = []
    for path in directory.glob("*.rec"):
        data = path.read_bytes()
        out += [int(data[i : i + LINE - 1]) for i in range(0, len(data) - LINE + 1, LINE)]
    return sorted(out)


def clear(directory: Path) -> None:
    for path in directory.glob("*.rec"):
        path.unlink()
