"""Paused schedules on both databases (issue 17): rows are paused by hand, as the run outcome path
does after failed slots; resuming runs them again from the next slot after now, never as a burst of
the slots missed meanwhile. And a schedule's own failure policy: what is accepted, what is refused
(nothing written), and what applies when it has none."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from core import queries
from core.domain import ScheduleFilter
from core.exceptions import InvalidInput, UnknownUser
from core.executor import Runner
from core.retry import RetryDefaults
from dispatcher.service import Dispatcher
from services.schedules import USE_DEFAULT, CalendarChange, FailurePolicy, PolicyChange, Schedules
from tests import seeding
from tests.conftest import T0, Backend

REASON = "paused after 3 consecutive failed slots; last error: HTTP 503"


def schedules(backend: Backend, defaults: RetryDefaults = RetryDefaults()) -> Schedules:
    return Schedules(backend.engine, backend.clock, default_interval=5, policy_defaults=defaults)


def pause(backend: Backend, user_id: str = "alice", *, at: datetime | None = None) -> None:
    with backend.engine.begin() as conn:
        seeding.pause(conn, user_id, at=at or backend.clock.moment, reason=REASON)


def tick(backend: Backend) -> list[datetime]:
    """One sync pass; the slots it ran."""
    cfg = backend.settings()
    ran: list[datetime] = []
    Dispatcher.inline(cfg, backend.engine, backend.clock, Runner(backend.engine, cfg, backend.clock, lambda u, c: ran.append(c.slot))).tick()
    return ran


def test_a_paused_schedule_is_not_run_and_resuming_runs_it_at_its_next_slot_from_now_once(backend: Backend) -> None:
    schedules(backend).set("alice", interval=5)
    assert tick(backend) == [T0]  # next slot T0+5m
    pause(backend)
    backend.clock.moment = T0 + timedelta(hours=2, minutes=1)  # 24 slots went by while paused
    assert tick(backend) == [], "paused: not claimed"

    resumed = schedules(backend).resume("alice")

    assert resumed.resumed
    schedule = resumed.schedule
    assert (schedule.paused, schedule.paused_at, schedule.paused_reason, schedule.failed_slots) == (False, None, None, 0)
    assert schedule.next_run_at == T0 + timedelta(hours=2, minutes=5), "the next slot of its cadence after now"
    assert tick(backend) == [], "no burst of the missed slots"
    backend.clock.moment = T0 + timedelta(hours=2, minutes=5)
    assert tick(backend) == [T0 + timedelta(hours=2, minutes=5)]
    assert tick(backend) == []


def test_a_schedule_resumed_before_its_next_slot_keeps_that_slot(backend: Backend) -> None:
    schedules(backend).set("alice", interval=60)
    tick(backend)
    pause(backend)
    backend.clock.advance(minutes=10)
    assert schedules(backend).resume("alice").schedule.next_run_at == T0 + timedelta(minutes=60)


def test_a_calendar_schedule_resumes_at_its_next_occurrence_after_now(backend: Backend) -> None:
    schedules(backend).set("alice", calendar=CalendarChange(cron="0 9 * * *", time_zone="Europe/Berlin"))
    pause(backend)
    backend.clock.moment = datetime(2026, 1, 9, 10, 0)  # Friday 11:00 in Berlin; four 09:00s went by
    assert schedules(backend).resume("alice").schedule.next_run_at == datetime(2026, 1, 10, 8, 0)


def test_resuming_a_schedule_that_is_not_paused_changes_nothing(backend: Backend) -> None:
    schedules(backend).set("alice", interval=5)
    before = backend.schedule("alice")
    backend.clock.advance(hours=3)
    resumed = schedules(backend).resume("alice")
    assert not resumed.resumed
    assert backend.schedule("alice") == before, "not even updatedAt or nextRunAt moves"


def test_resuming_an_unknown_user_is_refused(backend: Backend) -> None:
    with pytest.raises(UnknownUser):
        schedules(backend).resume("nobody")


def test_resuming_while_a_run_holds_the_lease_leaves_next_run_to_that_run(backend: Backend) -> None:
    schedules(backend).set("alice", interval=5)
    seen = {}

    def task(user_id, context):
        pause(backend)
        seen["during"] = schedules(backend).resume("alice").schedule

    cfg = backend.settings()
    Dispatcher.inline(cfg, backend.engine, backend.clock, Runner(backend.engine, cfg, backend.clock, task)).tick()
    during = seen["during"]
    assert not during.paused
    assert during.next_run_at == during.locked_until, "the lease still owns nextRunAt"
    assert backend.schedule("alice").next_run_at == T0 + timedelta(minutes=5)


def test_the_paused_filter_lists_only_paused_schedules_and_they_are_counted(backend: Backend) -> None:
    backend.add_schedules(4)
    pause(backend, "user-000001")
    pause(backend, "user-000003")
    schedules(backend).set("user-000003", enabled=False)  # paused and disabled are two states
    page = schedules(backend).list_page(which=ScheduleFilter.PAUSED, search=None, limit=10, offset=0)
    assert [s.user_id for s in page.rows] == ["user-000001", "user-000003"]
    with backend.engine.connect() as conn:
        assert queries.count_paused(conn) == 2
        assert queries.count_due(conn, now=backend.clock.moment) == 2


@pytest.mark.mysql
def test_counting_paused_schedules_reads_two_ranges_of_the_due_index(mysql_backend: Backend) -> None:
    mysql_backend.add_schedules(2000)
    mysql_backend.add_schedules(500, enabled=False, prefix="off")
    for user_id in ("user-000007", "off-000003"):
        pause(mysql_backend, user_id)
    with mysql_backend.engine.begin() as conn:
        conn.execute(text("ANALYZE TABLE UserMonitorSchedule"))
        assert queries.count_paused(conn) == 2
    with mysql_backend.engine.connect() as conn:
        compiled = queries.paused_count_query().compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        [plan] = [dict(row._mapping) for row in conn.exec_driver_sql("EXPLAIN " + compiled.string)]
    assert (plan["key"], plan["type"]) == ("ix_UserMonitorSchedule_due", "range"), plan
    assert int(plan["rows"]) < 100, plan


# --- the failure policy -----------------------------------------------------------------------------


def test_operators_set_the_failure_policy_and_put_the_defaults_back(backend: Backend) -> None:
    service = schedules(backend, RetryDefaults(1, 45, 0))
    created = service.set("alice", policy=PolicyChange(retries="3", retry_backoff="5m", pause_after=5)).schedule
    assert (created.retries, created.retry_backoff_seconds, created.pause_after) == (3, 300, 5)
    assert service.effective_policy(created) == FailurePolicy(3, 300, 5)

    changed = service.set("alice", policy=PolicyChange(retry_backoff=30, pause_after="off")).schedule
    assert (changed.retries, changed.retry_backoff_seconds, changed.pause_after) == (3, 30, 0), "retries left as it was"

    reset = service.set("alice", policy=PolicyChange(retries=USE_DEFAULT, retry_backoff=USE_DEFAULT, pause_after=USE_DEFAULT)).schedule
    assert (reset.retries, reset.retry_backoff_seconds, reset.pause_after) == (None, None, None)
    assert service.effective_policy(reset) == FailurePolicy(1, 45, 0), "the settings defaults apply"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (PolicyChange(retries=11), "retries must be a whole number from 0 to 10"),
        (PolicyChange(retries=-1), "retries must be"),
        (PolicyChange(retries="3.5"), "retries must be"),
        (PolicyChange(retries=True), "retries must be"),
        (PolicyChange(retry_backoff=0), "retry backoff must be a duration from 1s to 24h"),
        (PolicyChange(retry_backoff="86401"), "retry backoff must be"),
        (PolicyChange(retry_backoff="2d"), "retry backoff must be"),
        (PolicyChange(retry_backoff="-5s"), "retry backoff must be"),
        (PolicyChange(pause_after=0), '0 is refused'),
        (PolicyChange(pause_after="0"), '0 is refused'),
        (PolicyChange(pause_after=1001), "from 1 to 1000"),
        (PolicyChange(pause_after="sometimes"), "from 1 to 1000"),
        (PolicyChange(retries=2, pause_after=0), '0 is refused'),  # one bad value: the good one is not written either
    ],
)
def test_a_bad_failure_policy_is_refused_and_nothing_is_written(backend: Backend, change: PolicyChange, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        schedules(backend).set("alice", interval=10, policy=change)
    with pytest.raises(UnknownUser):
        schedules(backend).get("alice")  # not created
    schedules(backend).set("alice", interval=10, policy=PolicyChange(retries=1))
    before = backend.schedule("alice")
    backend.clock.advance(minutes=1)
    with pytest.raises(InvalidInput, match=message):
        schedules(backend).set("alice", interval=20, policy=change)
    assert backend.schedule("alice") == before, "not the interval, not updatedAt"


def test_a_plain_sql_schedule_takes_the_settings_defaults(backend: Backend) -> None:
    backend.add_schedules(1)
    schedule = backend.schedule("user-000000")
    assert (schedule.retries, schedule.retry_backoff_seconds, schedule.pause_after, schedule.paused, schedule.failed_slots) == (None, None, None, False, 0)
    assert schedules(backend, RetryDefaults(2, 60, 4)).effective_policy(schedule) == FailurePolicy(2, 60, 4)
