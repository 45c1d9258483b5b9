"""Capacity the operator can see, told as stories on SQLite and MariaDB with a fixed clock.

Given schedules, leases and run history, when a pass ends (or an operator asks), then the counts
of due, queued and running runs, the demand from history, the sample written by the pass and the
overload check say what they should.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from core import claims, fenced, health, queries, writes
from core.capacity import RunCounts, Sample
from core.domain import RunRecord, RunStatus, Trigger
from core.executor import Runner
from dispatcher.service import SAMPLE_PRUNE_EVERY, DispatchPolicy, Dispatcher
from dispatcher.sinks import InlineSink
from tests.conftest import T0, Backend

LEASE = timedelta(minutes=15)
LEASE_MS = int(LEASE.total_seconds() * 1000)


def inline_dispatcher(backend: Backend, **settings: object) -> Dispatcher:
    cfg = backend.settings(**settings)
    runner = Runner(backend.engine, cfg, backend.clock, lambda user_id, context: None, worker_name="test")
    return Dispatcher(backend.engine, backend.clock, DispatchPolicy.from_settings(cfg), InlineSink(runner, time_budget=60))


def lease_users(backend: Backend, count: int, *, start: int = 0, token: str = "tok") -> list[str]:
    """Claim `count` due users (oldest first) under one lease; start the first `start` of them."""
    now = backend.clock.moment
    with backend.engine.begin() as conn:
        claimed = claims.claim_due(conn, now=now, limit=count, token=token, lease_until=now + LEASE, trigger=Trigger.SCHEDULE).claimed
        for run in claimed[:start]:
            assert fenced.start_run(conn, user_id=run.user_id, token=token, lease_until=backend.clock.sql_now(LEASE_MS), now=backend.clock.sql_now())
    return [run.user_id for run in claimed]


def add_history(backend: Backend, user_id: str, *durations_s: float, status: RunStatus = RunStatus.SUCCEEDED, ago: timedelta = timedelta(minutes=1)) -> None:
    finished = backend.clock.moment - ago
    with backend.engine.begin() as conn:
        writes.insert_runs(conn, [
            RunRecord(user_id, "schedule", finished, 1, "tok", status.value, None, 0, None, finished, finished, int(d * 1000), "w")
            for d in durations_s
        ])


def counts(backend: Backend) -> RunCounts:
    with backend.engine.connect() as conn:
        return queries.run_counts(conn, now=backend.clock.moment)


def load(backend: Backend, default: float = 10.0, window: int = 60) -> health.capacity.Load:
    with backend.engine.connect() as conn:
        return health.measure_load(conn, now=backend.clock.moment, window_minutes=window, default_run_seconds=default)


def samples(backend: Backend) -> list[Sample]:
    with backend.engine.connect() as conn:
        return queries.samples_between(conn, start=T0 - timedelta(days=365), end=T0 + timedelta(days=365))


# --- due, queued, running ---------------------------------------------------------------------------


def test_due_queued_and_running_are_counted_apart(backend: Backend) -> None:
    # Given 10 due users, of which 6 are leased (4 of those started by a worker) ...
    backend.add_schedules(10, due_at=T0 - timedelta(minutes=1))
    lease_users(backend, 6, start=4)
    # ... plus one disabled-but-due user, and two users due only in the future,
    backend.add_schedules(1, prefix="disabled", due_at=T0 - timedelta(minutes=1), enabled=False)
    backend.add_schedules(2, prefix="later", due_at=T0 + timedelta(minutes=1))
    # then 4 wait for a pass, 2 wait in the queue, 4 run: the backlog is 6.
    assert counts(backend) == RunCounts(due=4, queued=2, running=4)
    assert counts(backend).backlog == 6


def test_a_lease_that_expired_is_due_again_not_queued(backend: Backend) -> None:
    backend.add_schedules(3)
    lease_users(backend, 3, start=1)
    backend.clock.advance(minutes=16)  # past the lease: lost runs come due again
    assert counts(backend) == RunCounts(due=3, queued=0, running=0)


def test_a_finished_run_is_no_longer_counted(backend: Backend) -> None:
    backend.add_schedules(2, interval=5)
    inline_dispatcher(backend).tick()
    assert counts(backend) == RunCounts(), "both ran inline and moved to their next slot"
    backend.clock.advance(minutes=5)
    assert counts(backend) == RunCounts(due=2)


# --- demand from history ---------------------------------------------------------------------------


def test_demand_is_each_users_average_over_its_interval(backend: Backend) -> None:
    # Given a 1-minute user whose runs took 20 s and 40 s, a 5-minute user at 120 s, and a
    # 10-minute user without history (counted at the window's average: (20+40+120)/3 = 60 s),
    backend.add_schedules(1, prefix="fast", interval=1)
    backend.add_schedules(1, prefix="slow", interval=5)
    backend.add_schedules(1, prefix="new", interval=10)
    add_history(backend, "fast-000000", 20, 40)
    add_history(backend, "slow-000000", 120)
    # and runs that say nothing about run time: skipped and lost runs, runs before the window,
    add_history(backend, "fast-000000", 3000, status=RunStatus.LOST)
    add_history(backend, "fast-000000", 3000, status=RunStatus.SKIPPED)
    add_history(backend, "slow-000000", 3000, ago=timedelta(minutes=61))
    # and a disabled user's history (needs nothing),
    backend.add_schedules(1, prefix="off", interval=1, enabled=False)
    add_history(backend, "off-000000", 60)
    # then the schedules need 30/60 + 120/300 + 60/600 = 1.0 runs at once.
    # (the disabled user's 60 s run enters the window's average: (20+40+120+60)/4 = 60 s as well)
    measured = load(backend)
    assert measured.demand == pytest.approx(30 / 60 + 120 / 300 + 60 / 600)
    assert measured.average_run_seconds == pytest.approx(60)


def test_without_any_history_every_user_counts_at_the_setting(backend: Backend) -> None:
    backend.add_schedules(30, interval=5)
    assert load(backend, default=20).demand == pytest.approx(30 * 20 / 300)


def test_a_failed_run_counts_as_long_as_it_took(backend: Backend) -> None:
    backend.add_schedules(1, interval=1)
    add_history(backend, "user-000000", 30, status=RunStatus.FAILED)
    assert load(backend).demand == pytest.approx(0.5)


# --- the sample of each pass -----------------------------------------------------------------------


def test_each_pass_writes_a_sample_of_its_end(backend: Backend) -> None:
    # Given 5 due users with 2-minute runs every 5 minutes, and a pass capped at 3 users,
    backend.add_schedules(5, interval=5)
    for i in range(5):
        add_history(backend, f"user-{i:06d}", 120)
    dispatcher = inline_dispatcher(backend, DISPATCH_BATCH_SIZE=3)
    # when it ends, its sample holds what is left and what the schedules need; sync mode's
    # capacity is the dispatcher itself, one run at a time,
    dispatcher.tick()
    (first,) = samples(backend)
    assert (first.at, first.due, first.queued, first.running, first.capacity) == (T0, 2, 0, 0, 1)
    # the 3 noop runs just recorded (~0 s) enter the averages: 2 users at 120 s, 3 at ~60 s.
    assert first.demand == pytest.approx((2 * 120 + 3 * 60) / 300, abs=0.01)
    assert first.overloaded, "1.4 runs at once needed, 1 available"
    # and the next pass writes the next one.
    backend.clock.advance(seconds=10)
    dispatcher.tick()
    assert [(s.at, s.due) for s in samples(backend)] == [(T0, 2), (T0 + timedelta(seconds=10), 0)]
    with backend.engine.connect() as conn:
        assert queries.last_dispatch_pass(conn)[0] == T0 + timedelta(seconds=10), "the pass record and the sample agree"


def test_samples_past_retention_are_pruned_by_the_first_pass_and_by_prune(backend: Backend) -> None:
    with backend.engine.begin() as conn:
        for days in (9, 8, 6):
            writes.insert_sample(conn, Sample(T0 - timedelta(days=days), 0, 0, 0, 0.0, 1))
    dispatcher = inline_dispatcher(backend, CAPACITY_SAMPLE_RETENTION=7)
    dispatcher.tick()
    assert [s.at for s in samples(backend)] == [T0 - timedelta(days=6), T0], "the first pass pruned"
    # Later passes prune one in SAMPLE_PRUNE_EVERY.
    with backend.engine.begin() as conn:
        writes.insert_sample(conn, Sample(T0 - timedelta(days=30), 0, 0, 0, 0.0, 1))
    dispatcher.tick()
    assert len(samples(backend)) == 4, "not on every pass"
    with backend.engine.begin() as conn:
        assert writes.prune_samples(conn, taken_before=T0 - timedelta(days=7)) == 1
    assert SAMPLE_PRUNE_EVERY > 1


# --- the overload check ------------------------------------------------------------------------------


def given_samples(backend: Backend, *rows: tuple[timedelta, float, int | None]) -> None:
    """Samples at T0 + offset with (demand, capacity)."""
    with backend.engine.begin() as conn:
        for offset, demand, capacity in rows:
            writes.insert_sample(conn, Sample(T0 + offset, 5, 3, capacity or 0, demand, capacity))


def overload_problems(backend: Backend, **settings: object) -> list[str]:
    with backend.engine.connect() as conn:
        report = health.evaluate(conn, now=backend.clock.moment, settings=backend.settings(**settings))
    return [p for p in report.problems if "capacity" in p]


def test_check_fails_once_demand_stayed_above_capacity_longer_than_the_setting(backend: Backend) -> None:
    minute = timedelta(minutes=1)
    # Given passes that saw enough capacity, then demand 6.5 against 4 from T0 + 2 min on,
    given_samples(backend, (0 * minute, 3.0, 4), (1 * minute, 4.0, 4), (2 * minute, 6.5, 4), (5 * minute, 6.5, 4), (12 * minute, 6.5, 4))
    # then at T0 + 12 min the overload has lasted 600 s: within HEALTH_MAX_OVERLOAD=900, fine,
    backend.clock.moment = T0 + 12 * minute
    assert overload_problems(backend, HEALTH_MAX_OVERLOAD=900) == []
    # and at T0 + 17:01 it has lasted 901 s: check fails, naming the figures.
    backend.clock.moment = T0 + 17 * minute + timedelta(seconds=1)
    (problem,) = overload_problems(backend, HEALTH_MAX_OVERLOAD=900)
    assert "6.5" in problem and "capacity of 4" in problem and "901s" in problem and "HEALTH_MAX_OVERLOAD=900" in problem
    with backend.engine.connect() as conn:
        assert queries.overload_started(conn, queries.latest_sample(conn)) == T0 + 2 * minute


def test_one_pass_with_enough_capacity_ends_the_overload(backend: Backend) -> None:
    minute = timedelta(minutes=1)
    given_samples(backend, (0 * minute, 6.5, 4), (10 * minute, 3.0, 8), (11 * minute, 9.0, 8), (20 * minute, 9.0, 8))
    backend.clock.moment = T0 + 21 * minute
    assert overload_problems(backend, HEALTH_MAX_OVERLOAD=900) == [], "overloaded for 10 minutes since the good pass"
    backend.clock.moment = T0 + 27 * minute
    assert len(overload_problems(backend, HEALTH_MAX_OVERLOAD=900)) == 1


def test_an_unknown_capacity_is_not_an_overload(backend: Backend) -> None:
    given_samples(backend, (timedelta(0), 50.0, None), (timedelta(hours=1), 50.0, None))
    backend.clock.moment = T0 + timedelta(hours=2)
    assert overload_problems(backend, HEALTH_MAX_OVERLOAD=60) == []


def test_no_worker_at_all_is_an_overload(backend: Backend) -> None:
    given_samples(backend, (timedelta(0), 0.5, 0), (timedelta(minutes=30), 0.5, 0))
    backend.clock.moment = T0 + timedelta(minutes=30)
    assert len(overload_problems(backend, HEALTH_MAX_OVERLOAD=900)) == 1


def test_demand_is_measured_once_per_period_and_read_from_the_newest_sample_within_it(backend: Backend) -> None:
    # Given a sample taken at T0 (the start of a 5-minute period) that saw demand 7,
    backend.add_schedules(1, interval=1)
    add_history(backend, "user-000000", 30)
    given_samples(backend, (timedelta(0), 7.0, 4))
    # then within the period the demand is the sample's (the per-user averages are not re-read),
    backend.clock.moment = T0 + health.DEMAND_PERIOD - timedelta(milliseconds=1)
    assert load(backend).demand == 7.0
    # and in the next period it is measured again: 30 s every 60 s.
    backend.clock.moment = T0 + health.DEMAND_PERIOD
    assert load(backend).demand == pytest.approx(0.5)
