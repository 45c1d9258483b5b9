"""Creating and editing schedules: how enabling, disabling and interval changes move nextRunAt."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dispatcher.service import Dispatcher
from core import queries, writes
from core.exceptions import InvalidInput, UnknownUser
from services.schedules import Schedules
from tests.conftest import T0, Backend
from core.executor import Runner


def schedules(backend: Backend) -> Schedules:
    return Schedules(backend.engine, backend.clock, default_interval=5)


def change(backend: Backend, user_id: str = "alice", **kwargs):
    return schedules(backend).set(user_id, **kwargs)


def run_once(backend: Backend) -> None:
    cfg = backend.settings()
    Dispatcher.inline(cfg, backend.engine, backend.clock, Runner(backend.engine, cfg, backend.clock, lambda u, c: None)).tick()


def test_a_new_schedule_is_due_at_once_with_the_default_interval(backend: Backend) -> None:
    created = change(backend)
    assert created.created
    assert (created.schedule.enabled, created.schedule.interval_minutes, created.schedule.next_run_at) == (True, 5, T0)


@pytest.mark.parametrize("bad", [0, 1441, "ten", "2.5"])
def test_a_bad_interval_writes_nothing(backend: Backend, bad) -> None:
    with pytest.raises(InvalidInput, match="between 1 and 1440"):
        change(backend, interval=bad)
    with pytest.raises(UnknownUser):
        schedules(backend).get("alice")
    change(backend, interval=30)
    with pytest.raises(InvalidInput):
        change(backend, interval=bad)
    assert backend.schedule("alice").interval_minutes == 30


def test_changing_the_interval_continues_from_the_last_slot(backend: Backend) -> None:
    change(backend, interval=60)
    run_once(backend)  # ran at slot T0; next T0+60m
    backend.clock.advance(minutes=10)
    assert change(backend, interval=30).schedule.next_run_at == T0 + timedelta(minutes=30)
    assert change(backend, interval=5).schedule.next_run_at == backend.clock.moment, "never in the past"


def test_disabling_keeps_next_run_and_enabling_recomputes_it(backend: Backend) -> None:
    change(backend, interval=15)
    run_once(backend)
    disabled = change(backend, enabled=False).schedule
    assert (disabled.enabled, disabled.next_run_at) == (False, T0 + timedelta(minutes=15))
    backend.clock.advance(hours=2)
    enabled = change(backend, enabled=True).schedule
    assert (enabled.enabled, enabled.next_run_at) == (True, backend.clock.moment)


def test_a_running_schedule_keeps_its_lease_and_the_run_uses_the_new_interval(backend: Backend) -> None:
    change(backend, interval=5)
    cfg = backend.settings()
    seen = {}

    def task(user_id, context):
        seen["during"] = change(backend, interval=20).schedule

    Dispatcher.inline(cfg, backend.engine, backend.clock, Runner(backend.engine, cfg, backend.clock, task)).tick()

    assert seen["during"].locked_by is not None
    assert seen["during"].next_run_at == seen["during"].locked_until, "the lease still owns nextRunAt"
    assert backend.schedule("alice").next_run_at == T0 + timedelta(minutes=20)


def test_a_trailing_space_names_another_user_not_alice(backend: Backend) -> None:
    """Given 'alice' and 'alice ' (a host may have both: ids are exact), when either is read or
    changed, then only that one is: MariaDB's PAD SPACE utf8mb4_bin used to compare them equal."""

    with backend.engine.begin() as conn:
        writes.insert_schedule(conn, user_id="alice", enabled=True, interval_minutes=5, next_run_at=T0, now=T0)
        assert queries.get_schedule(conn, "alice ") is None, "'alice ' is not alice"
        writes.insert_schedule(conn, user_id="alice ", enabled=True, interval_minutes=7, next_run_at=T0, now=T0)
        writes.update_schedule(conn, user_id="alice ", now=T0, enabled=False, interval_minutes=9, next_run_at=None)
    assert (backend.schedule("alice").interval_minutes, backend.schedule("alice").enabled) == (5, True)
    assert (backend.schedule("alice ").interval_minutes, backend.schedule("alice ").enabled) == (9, False)


def test_a_user_id_with_a_trailing_space_is_refused_before_anything_is_written(backend: Backend) -> None:
    change(backend, interval=5)
    with pytest.raises(InvalidInput, match="whitespace"):
        change(backend, user_id="alice ", interval=9)
    assert backend.schedule("alice").interval_minutes == 5
