"""What a benchmark run found: the figures, the machine they were measured on, and their two
renderings (a rich table on the terminal, JSON under ``bench/results/``)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

Unit = Literal["jobs/s", "calls/s", "ms", "×", "workers"]


@dataclass(slots=True)
class Figure:
    """One measured number. ``target`` is a bound (``>=`` for rates, ``<=`` for latencies and
    ratios) or None for a figure that is context, not a goal. ``share`` is the figure as a
    fraction of the raw FCALL ceiling measured the same way (see ``run.py``); ``detail`` keeps
    whatever raw numbers a caller wants beside it in the JSON."""

    key: str
    label: str
    value: float
    unit: Unit
    target: float | None = None
    share: float | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        lower_is_better = self.unit in ("ms", "×", "workers")
        return self.value <= self.target if lower_is_better else self.value >= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        bound = "≤" if self.unit in ("ms", "×", "workers") else "≥"
        return f"{bound} {_number(self.target, self.unit)}"

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["met"] = self.met
        return out


def _number(value: float, unit: Unit) -> str:
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"
    return f"{value:,.0f} {unit}"


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``samples`` by the nearest-rank method."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds, and the sample count."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "mean_ms": sum(ms) / len(ms),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine(redis_info: dict[str, Any]) -> dict[str, Any]:
    """Where the figures come from: cores, CPU, OS, Python, Redis, commit, date."""
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit + ("-dirty" if dirty and commit else ""),
        "cpu_cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "redis_version": redis_info.get("redis_version"),
        "redis_mode": redis_info.get("redis_mode"),
        "redis_io_threads": redis_info.get("io_threads_active"),
    }


def render(figures: list[Figure], env: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=(
            f"EMP queue benchmark · {env['cpu_cores']} cores · Python {env['python']} · "
            f"Redis {env['redis_version']} · {env['git_commit'][:12] or 'no commit'}"
        ),
        title_justify="left",
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    table.add_column("of FCALL ceiling", justify="right")
    table.add_column("note", overflow="fold")
    for fig in figures:
        met = fig.met
        mark = "" if met is None else ("[green]met[/]" if met else "[red]missed[/]")
        share = "" if fig.share is None else f"{fig.share:.0%}"
        table.add_row(
            fig.label, _number(fig.value, fig.unit), fig.target_text, mark, share, fig.note
        )
    console.print(table)


def write_json(
    path: Path, figures: list[Figure], env: dict[str, Any], extra: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": env, "figures": [f.as_json() for f in figures], **extra}
    path.write_text(json.dumps(doc, indent=2) + "\n")
