"""The capacity arithmetic (core.capacity): demand, backlog, expected wait, overload."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.capacity import CapacityReport, IntervalLoad, Load, RunCounts, demand, expected_wait_seconds, is_overloaded

T0 = datetime(2026, 1, 5, 12, 0, 0)


def test_the_sizing_example_of_the_docs() -> None:
    # 50 users, each run 240 s every 5 minutes: 40 runs at once.
    assert demand([IntervalLoad(5, users=50, timed_users=50, timed_seconds=50 * 240)], default_seconds=1) == pytest.approx(40)


def test_users_without_recent_runs_count_at_the_default() -> None:
    loads = [IntervalLoad(1, users=3, timed_users=1, timed_seconds=30), IntervalLoad(10, users=2, timed_users=0, timed_seconds=0)]
    # 1-minute users: (30 + 2 × 6) / 60 = 0.7; 10-minute users: 2 × 6 / 600 = 0.02
    assert demand(loads, default_seconds=6) == pytest.approx(0.72)


def test_no_users_need_nothing() -> None:
    assert demand([], default_seconds=60) == 0


user = st.tuples(st.integers(1, 1440), st.one_of(st.none(), st.floats(0, 3600)))


@given(st.lists(user, max_size=50), st.floats(0.001, 600))
def test_grouping_by_interval_equals_the_sum_over_users(users: list[tuple[int, float | None]], default: float) -> None:
    """Σ over users of (average or default) ÷ interval seconds, whatever the grouping."""
    naive = sum((default if avg is None else avg) / (interval * 60) for interval, avg in users)
    loads = [
        IntervalLoad(
            interval,
            users=sum(1 for i, _ in users if i == interval),
            timed_users=sum(1 for i, a in users if i == interval and a is not None),
            timed_seconds=sum(a for i, a in users if i == interval and a is not None),
        )
        for interval in {i for i, _ in users}
    ]
    assert demand(loads, default) == pytest.approx(naive, rel=1e-9, abs=1e-12)


def test_backlog_is_due_plus_queued_not_running() -> None:
    assert RunCounts(due=3, queued=4, running=100).backlog == 7


def test_expected_wait_shares_the_backlog_among_the_capacity() -> None:
    assert expected_wait_seconds(backlog=40, average_run_seconds=30, capacity=4) == 300
    assert expected_wait_seconds(backlog=0, average_run_seconds=30, capacity=4) == 0


@pytest.mark.parametrize("capacity", [0, None])
def test_expected_wait_is_unknown_without_capacity(capacity: int | None) -> None:
    assert expected_wait_seconds(backlog=40, average_run_seconds=30, capacity=capacity) is None


@pytest.mark.parametrize(
    ("needed", "capacity", "overloaded"),
    [(4.0, 4, False), (4.01, 4, True), (0.5, 0, True), (0.0, 0, False), (1000.0, None, False)],
)
def test_overload_is_demand_above_a_known_capacity(needed: float, capacity: int | None, overloaded: bool) -> None:
    assert is_overloaded(needed, capacity) is overloaded


def test_report_figures() -> None:
    load = Load(RunCounts(due=10, queued=10, running=4), demand=6.5, average_run_seconds=12)
    report = CapacityReport(now=T0, load=load, capacity=4, overloaded_since=T0 - timedelta(minutes=20))
    assert (report.needed, report.backlog, report.expected_wait_seconds) == (6.5, 20, 60)
    assert report.overloaded and report.overloaded_seconds == 1200
