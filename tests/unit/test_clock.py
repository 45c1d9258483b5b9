"""A clock's "now" inside a statement: one expression per clock and offset, read when the
statement runs, so the fenced writes of a run are built once whatever the clock."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import create_engine, select

from core import fenced
from core.clock import FixedClock, ProcessClock, epoch_ms, from_epoch_ms

T0 = datetime(2026, 3, 1, 8, 30)


def test_a_test_clock_gives_one_expression_per_offset_whose_value_follows_the_clock() -> None:
    clock = FixedClock(T0)
    assert clock.sql_now(5000) is clock.sql_now(5000) and clock.sql_now() is not clock.sql_now(5000)
    statement = select(clock.sql_now().label("now"), clock.sql_now(5000).label("later"))
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        assert tuple(conn.execute(statement).one()) == (T0, T0 + timedelta(seconds=5))
        clock.advance(minutes=1)
        assert tuple(conn.execute(statement).one()) == (T0 + timedelta(minutes=1), T0 + timedelta(minutes=1, seconds=5))


def test_the_process_clock_is_read_when_the_statement_runs() -> None:
    clock = ProcessClock()
    statement = select(clock.sql_now(60_000).label("t"))
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        before = clock.now(conn)
        value = conn.execute(statement).scalar_one()
        after = clock.now(conn)
    assert before + timedelta(minutes=1) <= value <= after + timedelta(minutes=1)


def test_a_fenced_write_is_built_once_per_clock_expression() -> None:
    clock = FixedClock(T0)
    first = fenced._start_run(clock.sql_now(900_000), clock.sql_now())
    clock.advance(seconds=30)
    assert fenced._start_run(clock.sql_now(900_000), clock.sql_now()) is first


def test_epoch_milliseconds_round_trip() -> None:
    moment = datetime(2004, 2, 1, 0, 0, 0, 761000)
    assert from_epoch_ms(epoch_ms(moment)) == moment
