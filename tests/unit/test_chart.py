"""The admin page's capacity chart (web/chart.py): a period without a dispatch pass is a gap."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.capacity import Sample
from web.chart import build_chart

END = datetime(2026, 1, 5, 12, 0)


def every_minute(start: datetime, minutes: int) -> list[Sample]:
    return [Sample(start + timedelta(minutes=m), due=m % 3, queued=1, running=2, demand=2.5, capacity=4) for m in range(minutes)]


def test_a_period_without_passes_is_a_gap_not_a_straight_line() -> None:
    # Given passes every minute from 10:00 to 10:29, none until 11:10, then every minute again,
    samples = every_minute(END - timedelta(hours=2), 30) + every_minute(END - timedelta(minutes=50), 50)
    chart = build_chart(samples, end=END, hours=6)
    # then every series is drawn in two pieces, and the band between them is the gap.
    assert {line.key: len(line.segments) for line in chart.lines} == {"due": 2, "queued": 2, "running": 2, "capacity": 2}
    [gap] = chart.gaps
    assert (gap.start, gap.end) == (END - timedelta(minutes=91), END - timedelta(minutes=50))
    first, second = next(line for line in chart.lines if line.key == "capacity").segments
    assert float(first.split()[-1].split(",")[0]) == gap.left and float(second.split()[0].split(",")[0]) == gap.right


def test_passes_at_their_usual_spacing_make_one_line() -> None:
    # Passes every 10 minutes (crontab every 10): no gap, however sparse they look.
    samples = [Sample(END - timedelta(minutes=m), 1, 0, 1, 1.0, 1) for m in range(0, 200, 10)]
    chart = build_chart(samples, end=END, hours=6)
    assert not chart.gaps and all(len(line.segments) == 1 for line in chart.lines)


def test_a_lone_pass_between_two_gaps_is_still_drawn() -> None:
    samples = every_minute(END - timedelta(hours=3), 10) + [Sample(END - timedelta(hours=2), 5, 0, 0, 1.0, 1)] + every_minute(END - timedelta(hours=1), 10)
    chart = build_chart(samples, end=END, hours=6)
    due = next(line for line in chart.lines if line.key == "due")
    assert len(chart.gaps) == 2 and len(due.segments) == 3
    assert len(due.segments[1].split()) == 2, "one point drawn twice: a dot with round line caps"
