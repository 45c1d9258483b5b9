"""Schedules: set, show, list and seed them. Each method owns its transaction and its clock read.

How nextRunAt moves when settings change (also in README "Semantics"):
- a new schedule is due at once (nextRunAt = now);
- disabling leaves nextRunAt alone; a run in flight still finishes and is recorded;
- enabling, or changing the interval, of a schedule that is not running sets
  nextRunAt = max(now, last slot + interval) (due now if it never ran);
- while a run holds the lease, only the settings change: the run's fenced finish computes the
  next slot from the new interval.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from core import queries, writes
from core.clock import Clock
from core.domain import Schedule, ScheduleFilter
from core.exceptions import InvalidInput, UnknownUser
from core.scheduling import rescheduled_after_change, validate_interval, validate_user_id


@dataclass(frozen=True)
class ScheduleChange:
    schedule: Schedule
    created: bool


@dataclass(frozen=True)
class Snapshot:
    """A schedule (or None) with the "now" it was read at, to tell whether it is running."""

    schedule: Schedule | None
    now: datetime


@dataclass(frozen=True)
class SchedulePage:
    rows: list[Schedule]
    now: datetime
    has_more: bool


def _checked(user_id: str, interval: object | None) -> tuple[str, int | None]:
    try:
        validate_user_id(user_id)
        return user_id, (validate_interval(interval) if interval is not None else None)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _next_run_after_change(current: Schedule, now: datetime, enabled: bool, interval: int) -> datetime | None:
    if current.locked_by is not None:
        # Even an expired lease owns nextRunAt until the run finishes, is taken over or unlocked.
        return None
    enabling = enabled and not current.enabled
    interval_changed = interval != current.interval_minutes
    if enabled and (enabling or interval_changed):
        return rescheduled_after_change(now, current.run_slot, interval)
    return None


class Schedules:
    """The schedule operations, on an engine and a clock only (the behaviour tests build one on a
    bare database); `default_interval` is DEFAULT_INTERVAL_MINUTES."""

    def __init__(self, engine: Engine, clock: Clock, *, default_interval: int) -> None:
        self.engine = engine
        self.clock = clock
        self.default_interval = default_interval

    def set(self, user_id: str, *, interval: object | None = None, enabled: bool | None = None, create: bool = True) -> ScheduleChange:
        """Validate, then create or change a schedule in one transaction (InvalidInput/UnknownUser
        raise before anything is written)."""
        user_id, interval_minutes = _checked(user_id, interval)
        with self.engine.begin() as conn:
            now = self.clock.now(conn)
            current = queries.get_schedule(conn, user_id, for_update=True)
            if current is None:
                if not create:
                    raise UnknownUser(f"no schedule for user {user_id!r}")
                writes.insert_schedule(
                    conn,
                    user_id=user_id,
                    enabled=True if enabled is None else enabled,
                    interval_minutes=interval_minutes or self.default_interval,
                    next_run_at=now,
                    now=now,
                )
                created = True
            else:
                new_enabled = current.enabled if enabled is None else enabled
                new_interval = current.interval_minutes if interval_minutes is None else interval_minutes
                writes.update_schedule(
                    conn, user_id=user_id, now=now, enabled=new_enabled, interval_minutes=new_interval,
                    next_run_at=_next_run_after_change(current, now, new_enabled, new_interval),
                )
                created = False
            schedule = queries.get_schedule(conn, user_id)
        assert schedule is not None  # written in this transaction
        return ScheduleChange(schedule, created)

    def update(self, user_id: str, *, enabled: bool | None, interval: object | None, create: bool) -> Snapshot:
        """`set`, then the schedule as the web shows it (with the "now" it was read at)."""
        change = self.set(user_id, interval=interval, enabled=enabled, create=create)
        return self.read(change.schedule.user_id)

    def get(self, user_id: str) -> Schedule:
        """The schedule, or UnknownUser."""
        with self.engine.connect() as conn:
            schedule = queries.get_schedule(conn, user_id)
        if schedule is None:
            raise UnknownUser(f"no schedule for user {user_id!r}")
        return schedule

    def read(self, user_id: str) -> Snapshot:
        with self.engine.connect() as conn:
            return Snapshot(queries.get_schedule(conn, user_id), self.clock.now(conn))

    def list_page(self, *, which: ScheduleFilter | None, search: str | None, limit: int, offset: int) -> SchedulePage:
        with self.engine.connect() as conn:
            now = self.clock.now(conn)
            # One row more than asked tells whether a next page exists without a COUNT over the table.
            rows = queries.list_schedules(conn, now=now, which=which, search=search or None, limit=limit + 1, offset=offset)
        return SchedulePage(rows[:limit], now, len(rows) > limit)

    def seed_demo_users(self, users: Iterable[tuple[str, int]]) -> list[str]:
        """Create the demo schedules that do not exist yet (a restart keeps what the demo changed)."""
        seeded = []
        for user_id, interval in users:
            try:
                self.get(user_id)
            except UnknownUser:
                self.set(user_id, interval=interval, enabled=True)
            seeded.append(user_id)
        return seeded
