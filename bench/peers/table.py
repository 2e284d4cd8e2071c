"""The table of ``make bench-peers``: one row per figure, one column per system, each peer's
figure beside its ratio to EMP's (peer ÷ EMP), and the best peer of each row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    unit: str
    higher_is_better: bool
    get: Callable[[dict[str, Any]], float | None]


def _at(*path: str) -> Callable[[dict[str, Any]], float | None]:
    def get(result: dict[str, Any]) -> float | None:
        value: Any = result
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return float(value)

    return get


def _scaling(result: dict[str, Any]) -> float | None:
    one, two = _at("drain_1", "running")(result), _at("drain_2", "running")(result)
    return None if one is None or two is None or one == 0 else two / one


ROWS = (
    Row("enqueue, one at a time", "jobs/s", True, _at("enqueue_one")),
    Row("bulk enqueue", "jobs/s", True, _at("enqueue_bulk")),
    Row("drain, 1 process, from spawn", "jobs/s", True, _at("drain_1", "from_spawn")),
    Row("drain, 1 process, once running", "jobs/s", True, _at("drain_1", "running")),
    Row("start-up: spawn → first job", "s", False, _at("drain_1", "startup_s")),
    Row("drain, 2 processes, from spawn", "jobs/s", True, _at("drain_2", "from_spawn")),
    Row("drain, 2 processes, once running", "jobs/s", True, _at("drain_2", "running")),
    Row("2 processes ÷ 1, once running", "×", True, _scaling),
    Row("idle pickup p50", "ms", False, _at("pickup", "p50_ms")),
    Row("idle pickup p99", "ms", False, _at("pickup", "p99_ms")),
)


def number(value: float, unit: str) -> str:
    if unit == "jobs/s":
        return f"{value:,.0f}"
    if unit == "×":
        return f"{value:.2f}×"
    return f"{value:.3g}" if unit == "s" else f"{value:.2f}"


def cell(value: float | None, emp: float | None, unit: str) -> str:
    """A peer's figure and its ratio to EMP's, e.g. ``2,457 (0.49×)``."""
    if value is None:
        return "—"
    text = number(value, unit)
    if emp and unit != "×":
        text += f" ({value / emp:.2f}×)"
    return text


def best_peer(row: Row, peers: list[dict[str, Any]]) -> tuple[str, float] | None:
    figures = [(str(r["system"]), v) for r in peers if (v := row.get(r)) is not None]
    if not figures:
        return None
    pick = max if row.higher_is_better else min
    return pick(figures, key=lambda f: f[1])


def render(results: list[dict[str, Any]], env: dict[str, Any], console: Console) -> None:
    emp = next((r for r in results if r.get("system") == "EMP"), {})
    peers = [r for r in results if r is not emp]
    table = Table(title="EMP and its peers on one private Redis (peer ÷ EMP in brackets)")
    table.add_column("figure")
    for r in results:
        table.add_column(f"{r['system']} {r.get('version', '')}".strip(), justify="right")
    table.add_column("best peer", justify="right")
    for row in ROWS:
        base = row.get(emp)
        cells = [number(base, row.unit) if (r is emp and base is not None)
                 else cell(row.get(r), base, row.unit) for r in results]  # fmt: skip
        best = best_peer(row, peers)
        best_text = f"{best[0]} {cell(best[1], base, row.unit)}" if best else "—"
        table.add_row(f"{row.label} ({row.unit})", *cells, best_text)
    console.print(table)
    for r in results:
        how = r.get("bulk_how")
        if how:
            console.print(f"  {r['system']}: bulk enqueue is {how}")
        for step, error in r.get("errors", {}).items():
            console.print(f"  [red]{r['system']} {step} failed:[/red] {error}")
    console.print(
        f"{env['cores']} cores; load average {env['load_before']} before, "
        f"{env.get('load_after')} after; sizes {env['sizes']}. On a shared machine the rates "
        "drop and the p99s grow with the neighbours' work."
    )
