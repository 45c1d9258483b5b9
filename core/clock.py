"""Where "now" comes from.

Every scheduling decision takes exactly one "now". Where several hosts meet (MySQL/MariaDB,
PostgreSQL) it is the database's clock, so dispatchers and workers with skewed clocks agree; SQLite
lives on one host, so the process clock is the same thing there. Tests pass a `FixedClock` and need
no sleeps.

All times are naive UTC datetimes truncated to milliseconds, the precision of `DATETIME(3)` and
`timestamp(3) without time zone`: a value written and read back compares equal, on SQLite, MySQL and
PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol

from sqlalchemy import Connection, DateTime, bindparam, literal_column, text
from sqlalchemy.sql.elements import ColumnElement
from typing_extensions import override


def to_ms_precision(moment: datetime) -> datetime:
    """Truncate to whole milliseconds (what DATETIME(3) stores)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def utc_naive(moment: datetime) -> datetime:
    """Convert an aware datetime to naive UTC; naive values are taken as UTC already."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return to_ms_precision(moment)


_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of a naive UTC datetime, in integers: through a float
    timestamp some times lost a millisecond (2004-02-01 00:00:00.761 gave ...760), so a run's
    slot came back from its job's arguments one millisecond early."""
    return (utc_naive(moment) - _EPOCH) // _MS


def from_epoch_ms(value: int) -> datetime:
    return _EPOCH + value * _MS


def utc_text(moment: datetime | None, *, sep: str = "T", empty: str = "-") -> str:
    """The one way a naive UTC time is written for people and logs: ISO 8601 to the millisecond
    with a Z (`2026-01-01T12:00:00.000Z`); `sep=" "` for tables; `empty` for a missing time."""
    if moment is None:
        return empty
    return utc_naive(moment).isoformat(sep=sep, timespec="milliseconds") + "Z"


class Clock(Protocol):
    def now(self, conn: Connection) -> datetime:
        """The current time (naive UTC, millisecond precision) for a decision made on `conn`."""
        ...

    def sql_now(self, offset_ms: int = 0) -> ColumnElement[datetime]:
        """now + offset inside a statement, so the statement reads or writes "now" without a round
        trip of its own. One expression object per clock and offset: statements built from it
        are built once (core.fenced)."""
        ...


class _PythonTimeClock:
    """A clock kept in this process: "now" goes into a statement as a bound parameter whose value
    is read from the clock when the statement runs."""

    def __init__(self) -> None:
        self._sql_now: dict[int, ColumnElement[datetime]] = {}

    def _current(self) -> datetime:
        raise NotImplementedError

    def sql_now(self, offset_ms: int = 0) -> ColumnElement[datetime]:
        if offset_ms not in self._sql_now:
            offset = timedelta(milliseconds=offset_ms)
            self._sql_now[offset_ms] = bindparam(
                f"clock_now_{int(offset_ms)}", type_=DateTime(), callable_=lambda: to_ms_precision(self._current() + offset)
            )
        return self._sql_now[offset_ms]


class DatabaseClock:
    """The database server's UTC clock: one clock for every host that shares the database.

    MySQL/MariaDB: UTC_TIMESTAMP(3), the time the statement started.

    PostgreSQL: statement_timestamp(), the same "time the statement started", read as UTC and cut to
    milliseconds. Not now() (= transaction_timestamp()): it is frozen when the transaction began, so
    a claim that waited on a lock, or any later statement of a longer transaction, would decide with
    a stale "now", unlike MariaDB. Not clock_timestamp() either: it is VOLATILE, so PostgreSQL
    cannot use `"nextRunAt" <= clock_timestamp()` as an index condition (it filters every row
    instead) and it changes from row to row within one statement; statement_timestamp() is STABLE,
    one value per statement, like MariaDB's.
    """

    def __init__(self, dialect_name: str = "mysql") -> None:
        self.dialect_name = dialect_name

    def now(self, conn: Connection) -> datetime:
        value = conn.execute(text(_NOW_SQL[_family(conn.dialect.name)])).scalar_one()
        return to_ms_precision(value)

    def sql_now(self, offset_ms: int = 0) -> ColumnElement[datetime]:
        return _database_now(_family(self.dialect_name), int(offset_ms))


def _family(dialect_name: str) -> str:
    return "postgresql" if dialect_name == "postgresql" else "mysql"


_NOW_SQL = {
    "mysql": "SELECT UTC_TIMESTAMP(3)",
    "postgresql": "SELECT date_trunc('milliseconds', statement_timestamp() AT TIME ZONE 'UTC')",
}


@lru_cache(maxsize=32)
def _database_now(family: str, offset_ms: int) -> ColumnElement[datetime]:
    # One expression object per offset, so statements built from it are built once (core.fenced).
    # offset_ms is an int from our own settings, never user input.
    if family == "postgresql":
        return literal_column(
            f"(date_trunc('milliseconds', statement_timestamp() AT TIME ZONE 'UTC') + INTERVAL '{offset_ms} milliseconds')",
            DateTime(),
        )
    return literal_column(f"(UTC_TIMESTAMP(3) + INTERVAL {offset_ms * 1000} MICROSECOND)", DateTime())


class ProcessClock(_PythonTimeClock):
    """This process's UTC clock; right for SQLite, whose writers all live on one host."""

    @override
    def _current(self) -> datetime:
        return to_ms_precision(datetime.now(UTC).replace(tzinfo=None))

    def now(self, conn: Connection) -> datetime:
        return self._current()


class FixedClock(_PythonTimeClock):
    """A clock that says what the test tells it to; `advance()` moves it forward."""

    def __init__(self, moment: datetime) -> None:
        super().__init__()
        self.moment = utc_naive(moment)

    @override
    def _current(self) -> datetime:
        return self.moment

    def now(self, conn: Connection) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> datetime:
        self.moment = to_ms_precision(self.moment + timedelta(**delta))
        return self.moment


def clock_for_dialect(dialect_name: str) -> Clock:
    """The production clock for a database: the server's where hosts meet, else the process's."""
    if dialect_name in ("mysql", "mariadb", "postgresql"):
        return DatabaseClock(dialect_name)
    return ProcessClock()
