"""Line charts of the last hour as inline SVG, rendered on the server like ``chart.py``'s bars:
no script and no chart library, within the page's Content-Security-Policy.

The viewBox is about as wide as a card on a phone (360 units), so a 13-unit label prints at
about 12 px there and larger on wider screens. Each chart carries a ``<title>`` and a ``<desc>``
that says in words what the lines show, for screen readers and for anyone who would rather read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH, HEIGHT = 360, 190
# Room for the axis labels; the left one fits the widest y label, a time such as "500 ms".
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 30
PALETTE = 6  # .series-0 … .series-5 in studio.css; more services reuse the colours

Value = float | int | None


@dataclass(frozen=True, slots=True)
class Tick:
    at: float  # x or y in viewBox units
    label: str


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    css: str
    runs: list[str]  # polyline points "x,y x,y …", broken where a minute has no value
    dots: list[tuple[float, float]]  # values with no neighbour, drawn as a dot
    summary: str  # what the <desc> says of this line


@dataclass(frozen=True, slots=True)
class LineChart:
    key: str  # id prefix, unique on the page
    title: str
    desc: str
    lines: list[Line]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    baseline: int = HEIGHT - BOTTOM


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is ≥ ``value`` (1 for nothing): a y-axis top with a
    round half-way tick."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(step * power for step in (1, 2, 5, 10) if step * power >= value))


def _number(value: float) -> str:
    return f"{value:.0f}"


def line_chart(
    key: str,
    title: str,
    series: Mapping[str, Sequence[Value]],
    *,
    start: datetime,
    summarise: Callable[[str, Sequence[Value]], str],
    label: Callable[[float], str] | None = None,
) -> LineChart:
    """One line per entry of ``series`` (a value per minute from ``start``, None for a minute
    with nothing to show). ``summarise(name, values)`` says a line's figures in words; ``label``
    writes a y-axis value (None: the values are counts, and the axis shows whole numbers)."""
    count = max((len(v) for v in series.values()), default=60)
    known = [v for values in series.values() for v in values if v is not None]
    top = nice_ceiling(max(known, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, count - 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return round(LEFT + i * step, 1), round(TOP + plot_h * (1 - v / top), 1)

    lines = []
    for n, (name, values) in enumerate(series.items()):
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(xy(i, v))
        lines.append(Line(
            name=name, css=f"series-{n % PALETTE}",
            runs=[" ".join(f"{x},{y}" for x, y in r) for r in runs if len(r) > 1],
            dots=[r[0] for r in runs if len(r) == 1],
            summary=summarise(name, values),
        ))  # fmt: skip
    # Counts get whole-number ticks only (no "0.5 jobs"); other values a half-way tick too.
    marks = [0.0, top / 2, top] if label or ((top / 2).is_integer() and top > 1) else [0.0, top]
    write = label or _number
    y_ticks = [Tick(round(TOP + plot_h * (1 - v / top), 1), write(v)) for v in marks]
    x_ticks = [Tick(round(LEFT + i * step, 1), (start + timedelta(minutes=i)).strftime("%H:%M"))
               for i in range(0, count, 15)]  # fmt: skip
    end = (start + timedelta(minutes=count - 1)).strftime("%H:%M")
    said = "; ".join(line.summary for line in lines) or "nothing in this hour"
    desc = f"{title} per minute, {start:%H:%M} to {end} UTC: {said}."
    return LineChart(key, title, desc, lines, y_ticks, x_ticks)
