"""The admin page's capacity chart: due, queued and running runs over the last hours, and the
capacity as a dashed line, drawn from the dispatch passes' samples as a server-rendered SVG.

Only geometry here (numbers and point lists); the template writes the <svg>, escaping every text,
and app.css colours it: the page's CSP allows no inline style or script. Samples closer together
than one pixel column are merged (the highest value of each series wins, so a spike stays visible).

A period without a pass is a gap, not a straight line between its two ends: nobody measured
anything then (the dispatcher was down, the usual reason to look at the chart). Two samples
further apart than GAP_MIN, and than GAP_FACTOR times the usual spacing of the passes, end one
segment and start the next; the gap itself is drawn as a shaded band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median

from core.capacity import Sample

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 14, 34  # margins for the axis labels
SERIES = (("due", "Due"), ("queued", "Queued"), ("running", "Running"))
# A pause between passes longer than both of these is a gap. GAP_MIN matches `check`'s default
# HEALTH_MAX_PASS_AGE (and the NoDispatchPass alert): shorter pauses are a slow pass, not an outage.
GAP_MIN = timedelta(minutes=5)
GAP_FACTOR = 3


@dataclass(frozen=True)
class Line:
    key: str  # CSS class suffix and data-series value
    label: str
    segments: list[str]  # one "x,y x,y ..." per run of passes without a gap, for <polyline points>
    last: float | None  # the newest value, for the legend


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Gap:
    """A period with no pass: x from `left` to `right`, between the samples at `start` and `end`."""

    left: float
    right: float
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Chart:
    start: datetime
    end: datetime
    lines: list[Line] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
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


def gap_after(samples: Sequence[Sample]) -> set[int]:
    """Indexes i (into `samples`, oldest first) with a gap between sample i and i + 1."""
    spacings = [(b.at - a.at).total_seconds() for a, b in zip(samples, samples[1:])]
    if not spacings:
        return set()
    threshold = max(GAP_MIN.total_seconds(), GAP_FACTOR * median(spacings))
    return {i for i, spacing in enumerate(spacings) if spacing > threshold}


def build_chart(samples: Sequence[Sample], *, end: datetime, hours: int) -> Chart:
    start = end - timedelta(hours=hours)
    chart = Chart(start, end)
    shown = sorted((s for s in samples if start <= s.at <= end), key=lambda s: s.at)
    if not shown:
        return chart
    span = (end - start).total_seconds()
    plot_w, plot_h = chart.right - chart.left, chart.bottom - chart.top

    def x_of(at: datetime) -> int:
        return round((at - start).total_seconds() / span * plot_w)

    gaps = gap_after(shown)
    chart.gaps.extend(Gap(chart.left + x_of(shown[i].at), chart.left + x_of(shown[i + 1].at), shown[i].at, shown[i + 1].at) for i in sorted(gaps))

    # One column per pixel: the highest value of each series among the samples that fall in it.
    # A gap is wider than a pixel, so a column never spans one; `segment` says which side it is on.
    columns: dict[int, dict[str, float]] = {}
    segment_of: dict[int, int] = {}
    segment = 0
    for i, s in enumerate(shown):
        column = x_of(s.at)
        segment_of[column] = segment
        segment += i in gaps
        values = {"due": s.due, "queued": s.queued, "running": s.running}
        if s.capacity is not None:
            values["capacity"] = s.capacity
        merged = columns.setdefault(column, {})
        for key, value in values.items():
            merged[key] = max(merged.get(key, value), value)

    top_value = _nice_ceiling(max(max(v.values()) for v in columns.values()))

    def y(value: float) -> float:
        return round(chart.bottom - value / top_value * plot_h, 1)

    def segments(key: str) -> tuple[list[str], float | None]:
        runs: dict[int, list[str]] = {}
        last = None
        for column, values in sorted(columns.items()):
            if key in values:
                last = values[key]
                runs.setdefault(segment_of[column], []).append(f"{chart.left + column},{y(last)}")
        # A lone pass between two gaps is a dot: a polyline of one point draws nothing.
        return [" ".join(points * 2 if len(points) == 1 else points) for _, points in sorted(runs.items())], last

    for key, label in (*SERIES, ("capacity", "Capacity")):
        lines, last = segments(key)
        if lines:
            chart.lines.append(Line(key, label, lines, last))

    chart.y_ticks.extend(Tick(y(top_value * f), _number(top_value * f)) for f in (0, 0.25, 0.5, 0.75, 1))
    # A label every hour (every 2 for long spans), on the hour, in UTC.
    step = timedelta(hours=1 if hours <= 8 else 2)
    tick = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while tick <= end:
        x = chart.left + (tick - start).total_seconds() / span * plot_w
        chart.x_ticks.append(Tick(round(x, 1), tick.strftime("%H:%M")))
        tick += step
    return chart
