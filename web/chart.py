"""The admin page's capacity chart: due, queued and running runs over the last hours, and the
capacity as a dashed line, drawn from the dispatch passes' samples as a server-rendered SVG.

Only geometry here (numbers and point lists); the template writes the <svg>, escaping every text,
and app.css colours it: the page's CSP allows no inline style or script. Samples closer together
than one pixel column are merged (the highest value of each series wins, so a spike stays visible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.capacity import Sample

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 14, 34  # margins for the axis labels
SERIES = (("due", "Due"), ("queued", "Queued"), ("running", "Running"))


@dataclass(frozen=True)
class Line:
    key: str  # CSS class suffix and data-series value
    label: str
    points: str  # "x,y x,y ..." for <polyline points>
    last: float | None  # the newest value, for the legend


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    start: datetime
    end: datetime
    lines: list[Line] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM

    @property
    def empty(self) -> bool:
        return not self.lines


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _number(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"


def build_chart(samples: Sequence[Sample], *, end: datetime, hours: int) -> Chart:
    start = end - timedelta(hours=hours)
    chart = Chart(start, end)
    shown = [s for s in samples if start <= s.at <= end]
    if not shown:
        return chart
    span = (end - start).total_seconds()
    plot_w, plot_h = chart.right - chart.left, chart.bottom - chart.top

    # One column per pixel: the highest value of each series among the samples that fall in it.
    columns: dict[int, dict[str, float]] = {}
    for s in shown:
        column = round((s.at - start).total_seconds() / span * plot_w)
        values = {"due": s.due, "queued": s.queued, "running": s.running}
        if s.capacity is not None:
            values["capacity"] = s.capacity
        merged = columns.setdefault(column, {})
        for key, value in values.items():
            merged[key] = max(merged.get(key, value), value)

    top_value = _nice_ceiling(max(max(v.values()) for v in columns.values()))

    def y(value: float) -> float:
        return round(chart.bottom - value / top_value * plot_h, 1)

    def points(key: str) -> tuple[str, float | None]:
        pairs = [(chart.left + column, values[key]) for column, values in sorted(columns.items()) if key in values]
        return " ".join(f"{x},{y(v)}" for x, v in pairs), (pairs[-1][1] if pairs else None)

    for key, label in (*SERIES, ("capacity", "Capacity")):
        line, last = points(key)
        if line:
            chart.lines.append(Line(key, label, line, last))

    chart.y_ticks.extend(Tick(y(top_value * f), _number(top_value * f)) for f in (0, 0.25, 0.5, 0.75, 1))
    # A label every hour (every 2 for long spans), on the hour, in UTC.
    step = timedelta(hours=1 if hours <= 8 else 2)
    tick = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while tick <= end:
        x = chart.left + (tick - start).total_seconds() / span * plot_w
        chart.x_ticks.append(Tick(round(x, 1), tick.strftime("%H:%M")))
        tick += step
    return chart
