"""The dashboard's four charts of the last hour, from the queue's per-minute counters
(``emp_core.queue.stats``): jobs waiting, completed and failed per minute, and the time new jobs
waited for a worker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from emp_core.queue.stats import MINUTE_MS, History
from emp_studio.linechart import LineChart, Value, line_chart
from emp_studio.render import duration


def _peak(values: Sequence[Value]) -> float:
    return max((v for v in values if v is not None), default=0)


def _counted(what: str) -> Callable[[str, Sequence[Value]], str]:
    def say(name: str, values: Sequence[Value]) -> str:
        total = sum(v for v in values if v is not None)
        return f"{name} {total:g} {what}, at most {_peak(values):g} in a minute"

    return say


def _seconds(value: float) -> str:
    """A y-axis time: ``0``, ``500 ms``, ``2.5 s``, ``3 min``."""
    return "0" if value == 0 else duration(value)


def hour_charts(history: History) -> list[LineChart]:
    """Waiting, completed, failed and wait-time charts, one line per service."""
    start = datetime.fromtimestamp(history.minutes[0].minute * MINUTE_MS / 1000, UTC)
    services = history.services

    def waiting(name: str, values: Sequence[Value]) -> str:
        now = next((v for v in reversed(values) if v is not None), None)
        if now is None:
            return f"{name} not sampled"
        return f"{name} {now:g} waiting at the last sample, at most {_peak(values):g}"

    def failed(name: str, values: Sequence[Value]) -> str:
        retried = sum(history.series("retried", name))
        return f"{name} {sum(v for v in values if v is not None):g} failed for good, " \
               f"{retried} retried"  # fmt: skip

    def wait(name: str, values: Sequence[Value]) -> str:
        jobs = sum(history.series("waited", name))
        if not jobs:
            return f"{name} no job started"
        mean = sum(history.series("wait_ms", name)) / jobs / 1000
        return f"{name} {mean:.1f} s on average over {jobs} job{'s' if jobs != 1 else ''}"

    return [
        line_chart("depth", "Jobs waiting", {s: history.depth(s) for s in services},
                   start=start, summarise=waiting),
        line_chart("completed", "Completed", {s: history.series("completed", s) for s in services},
                   start=start, summarise=_counted("completed")),
        line_chart("failed", "Failed", {s: history.series("failed", s) for s in services},
                   start=start, summarise=failed),
        line_chart("wait", "Wait for a worker", {s: history.mean_wait_s(s) for s in services},
                   start=start, summarise=wait, label=_seconds),
    ]  # fmt: skip
