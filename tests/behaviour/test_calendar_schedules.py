"""Calendar schedules on both databases: created, claimed at their slot, moved to the next
occurrence after the slot they ran (missed ones counted, never run in a burst), edited and refused."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from core.exceptions import InvalidInput, UnknownUser
from core.executor import Runner
from dispatcher.service import Dispatcher
from core import capacity, queries
from core.calendar import spread_start
from services.schedules import CalendarChange, Schedules
from tests.conftest import T0, Backend

# T0 is Monday 2026-01-05 12:00 UTC (13:00 in Berlin).
WEEKDAYS_AT_NINE = CalendarChange(cron="0 9 * * MON-FRI", time_zone="Europe/Berlin")


def schedules(backend: Backend) -> Schedules:
    return Schedules(backend.engine, backend.clock, default_interval=5)


def tick(backend: Backend) -> int:
    cfg = backend.settings()
    ran: list[str] = []
    Dispatcher.inline(cfg, backend.engine, backend.clock, Runner(backend.engine, cfg, backend.clock, lambda u, c: ran.append(u))).tick()
    return len(ran)


def test_a_new_calendar_schedule_waits_for_its_first_occurrence(backend: Backend) -> None:
    created = schedules(backend).set("alice", calendar=WEEKDAYS_AT_NINE)
    assert created.created
    schedule = created.schedule
    assert (schedule.kind, schedule.cron_expr, schedule.time_zone) == ("cron", "0 9 * * MON-FRI", "Europe/Berlin")
    assert schedule.next_run_at == datetime(2026, 1, 6, 8, 0)  # Tuesday 09:00 CET
    assert tick(backend) == 0


def test_it_is_claimed_at_its_slot_and_moves_to_the_next_occurrence(backend: Backend) -> None:
    schedules(backend).set("alice", calendar=WEEKDAYS_AT_NINE)
    for day in (6, 7, 8, 9):  # Tuesday to Friday, 09:00 CET
        backend.clock.moment = datetime(2026, 1, day, 8, 0)
        assert tick(backend) == 1
    assert backend.schedule("alice").next_run_at == datetime(2026, 1, 12, 8, 0), "Monday, not Saturday"
    assert [(r.slot.day, r.status, r.skipped_slots) for r in backend.runs("alice")] == [(d, "succeeded", 0) for d in (6, 7, 8, 9)]


def test_missed_occurrences_are_counted_not_run_in_a_burst(backend: Backend) -> None:
    schedules(backend).set("alice", calendar=CalendarChange(cron="0 * * * *"))
    backend.clock.moment = datetime(2026, 1, 5, 18, 30)  # slot 13:00; 14:00..18:00 went by
    assert tick(backend) == 1
    assert backend.runs("alice")[0].skipped_slots == 5
    assert backend.schedule("alice").next_run_at == datetime(2026, 1, 5, 19, 0)
    assert tick(backend) == 0


def test_a_run_across_the_spring_change_moves_to_the_end_of_the_gap(backend: Backend) -> None:
    backend.clock.moment = datetime(2026, 3, 27, 12, 0)
    schedules(backend).set("alice", calendar=CalendarChange(cron="30 2 * * *", time_zone="Europe/Berlin"))
    backend.clock.moment = datetime(2026, 3, 28, 1, 30)  # Saturday 02:30 CET
    assert tick(backend) == 1
    assert backend.schedule("alice").next_run_at == datetime(2026, 3, 29, 1, 0), "03:00 CEST: 02:30 does not exist"


def test_spread_starts_a_calendar_schedule_up_to_that_late_and_stays_on_the_calendar(backend: Backend) -> None:
    schedule = schedules(backend).set("alice", calendar=CalendarChange(cron="0 9 * * *", time_zone="UTC", spread="10m")).schedule
    offset = schedule.next_run_at - datetime(2026, 1, 6, 9, 0)
    assert timedelta(0) <= offset < timedelta(minutes=10)
    backend.clock.moment = schedule.next_run_at
    assert tick(backend) == 1
    assert backend.schedule("alice").next_run_at == datetime(2026, 1, 7, 9, 0) + offset


def test_an_interval_switches_it_back_and_a_rule_change_reschedules(backend: Backend) -> None:
    schedules(backend).set("alice", calendar=WEEKDAYS_AT_NINE)
    moved = schedules(backend).set("alice", calendar=CalendarChange(time_zone="America/New_York")).schedule
    assert (moved.cron_expr, moved.next_run_at) == ("0 9 * * MON-FRI", datetime(2026, 1, 5, 14, 0))
    back = schedules(backend).set("alice", interval=7).schedule
    assert (back.kind, back.cron_expr, back.interval_minutes, back.next_run_at) == ("interval", None, 7, T0)


@pytest.mark.parametrize(("change", "problem"), [
    (CalendarChange(cron="0 0 30 2 *"), "never fires"),
    (CalendarChange(cron="0 9 * * * *"), "seconds"),
    (CalendarChange(cron="0 9 * *"), "fields"),
    (CalendarChange(cron="0 9 * * *", time_zone="Mars/Olympus"), "unknown time zone"),
    (CalendarChange(cron="0 9 * * *", spread="2d"), "spread"),
])
def test_bad_input_writes_nothing(backend: Backend, change: CalendarChange, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        schedules(backend).set("alice", calendar=change)
    with pytest.raises(UnknownUser):
        schedules(backend).get("alice")
    schedules(backend).set("alice", calendar=WEEKDAYS_AT_NINE)
    with pytest.raises(InvalidInput, match=problem):
        schedules(backend).set("alice", calendar=change)
    kept = backend.schedule("alice")
    assert (kept.cron_expr, kept.time_zone, kept.spread_seconds) == ("0 9 * * MON-FRI", "Europe/Berlin", 0)


def test_a_plain_sql_insert_is_an_interval_schedule_as_before(backend: Backend) -> None:
    with backend.engine.begin() as conn:
        conn.execute(backend.sql("""INSERT INTO "UserMonitorSchedule" ("userId") VALUES ('host-made')"""))
    row = backend.schedule("host-made")
    assert (row.kind, row.cron_expr, row.time_zone, row.spread_seconds, row.interval_minutes) == ("interval", None, "UTC", 0, 5)


def spreading(backend: Backend) -> Schedules:
    return Schedules(backend.engine, backend.clock, default_interval=5, spread_start=True)


def test_with_spread_start_times_an_interval_schedule_starts_at_its_own_phase(backend: Backend) -> None:
    first = spreading(backend).set("alice", interval=5).schedule.next_run_at
    assert T0 <= first < T0 + timedelta(minutes=5)
    assert first == spread_start("alice", T0, 5), "the same phase on every host: from the user id alone"
    backend.clock.moment = first
    assert tick(backend) == 1
    assert backend.schedule("alice").next_run_at == first + timedelta(minutes=5), "fixed rate keeps the phase"
    changed = spreading(backend).set("alice", interval=60).schedule.next_run_at
    assert changed == spread_start("alice", first + timedelta(minutes=60), 60), "a new interval gets its phase in it"


def test_a_bulk_import_in_one_transaction_is_spread_over_the_interval(backend: Backend) -> None:
    users = [f"import-{i:04d}" for i in range(600)]
    assert spreading(backend).create_many(users, interval=5) == 600
    due = sorted(backend.schedule(u).next_run_at for u in users)
    assert T0 <= due[0] and due[-1] < T0 + timedelta(minutes=5)
    per_minute = [sum(1 for d in due if T0 + timedelta(minutes=m) <= d < T0 + timedelta(minutes=m + 1)) for m in range(5)]
    assert max(per_minute) < 170, per_minute  # 120 each when perfectly even, not 600 at once
    assert Schedules(backend.engine, backend.clock, default_interval=5).create_many(["plain-1"], interval=5) == 1
    assert backend.schedule("plain-1").next_run_at == T0, "spreading off: due at once, as before"


def test_a_bulk_import_with_one_bad_id_writes_nothing(backend: Backend) -> None:
    with pytest.raises(InvalidInput):
        spreading(backend).create_many(["ok-1", " bad"], interval=5)
    with pytest.raises(UnknownUser):
        schedules(backend).get("ok-1")


def test_capacity_counts_a_calendar_schedule_by_its_average_rate_over_a_week(backend: Backend) -> None:
    schedules(backend).set("hourly", calendar=CalendarChange(cron="0 * * * *", time_zone="Europe/Berlin"))
    schedules(backend).set("weekdays", calendar=WEEKDAYS_AT_NINE)
    schedules(backend).set("every-5", interval=5)
    with backend.engine.connect() as conn:
        loads = queries.interval_loads(conn, since=T0 - timedelta(hours=1))
    # No runs yet: each user counts at the default run time, 10 s here.
    assert capacity.demand(loads, default_seconds=10) == pytest.approx(10 / 3600 + 10 / (2016 * 60) + 10 / 300, rel=0.01)
