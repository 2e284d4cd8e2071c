"""A bar chart of matches per day as inline SVG, rendered on the server: no chart library, no
script, and it obeys the page's Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

WIDTH, HEIGHT, PAD = 560, 140, 24


@dataclass(frozen=True, slots=True)
class Bar:
    day: date
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    peak: int
    total: int
    width: int = WIDTH
    height: int = HEIGHT
    baseline: int = HEIGHT - PAD


def daily_chart(counts: Mapping[date, int], *, today: date, days: int = 14) -> Chart:
    """Bars for the ``days`` days ending ``today``, zero where nothing matched."""
    series = [(today - timedelta(days=days - 1 - i)) for i in range(days)]
    values = [counts.get(d, 0) for d in series]
    peak = max(values) or 1
    slot = (WIDTH - 2 * PAD) / days
    bars = []
    for i, (day, n) in enumerate(zip(series, values, strict=True)):
        h = (HEIGHT - 2 * PAD) * n / peak
        bars.append(Bar(day, n, PAD + i * slot + 2, HEIGHT - PAD - h, slot - 4, h))
    return Chart(bars, max(values), sum(values))
