"""Reading and changing schedules: validation first, then one short transaction.

How nextRunAt moves (also in README "Semantics"):
- a new schedule is due at once (nextRunAt = now);
- disabling leaves nextRunAt alone; a run in flight still finishes and is recorded;
- enabling, or changing the interval, of a schedule that is not running sets
  nextRunAt = max(now, last slot + interval) (due now if it never ran);
- while a run holds the lease, only the settings change: the run's fenced finish computes the
  next slot from the new interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from monitor_scheduler import repository as repo
from monitor_scheduler.clock import Clock
from monitor_scheduler.exceptions import InvalidInput, UnknownUser
from monitor_scheduler.repository import Schedule
from monitor_scheduler.scheduling import rescheduled_after_change, validate_interval, validate_user_id


@dataclass(frozen=True)
class ScheduleChange:
    schedule: Schedule
    created: bool


def _checked(user_id: str, interval: object | None) -> tuple[str, int | None]:
    try:
        validate_user_id(user_id)
        return user_id, (validate_interval(interval) if interval is not None else None)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def set_schedule(
    engine: Engine,
    clock: Clock,
    *,
    user_id: str,
    interval: object | None = None,
    enabled: bool | None = None,
    default_interval: int,
    create: bool = True,
) -> ScheduleChange:
    user_id, interval_minutes = _checked(user_id, interval)
    with engine.begin() as conn:
        now = clock.now(conn)
        current = repo.get_schedule(conn, user_id, for_update=True)
        if current is None:
            if not create:
                raise UnknownUser(f"no schedule for user {user_id!r}")
            repo.insert_schedule(
                conn,
                user_id=user_id,
                enabled=True if enabled is None else enabled,
                interval_minutes=interval_minutes or default_interval,
                next_run_at=now,
                now=now,
            )
            created = True
        else:
            new_enabled = current.enabled if enabled is None else enabled
            new_interval = current.interval_minutes if interval_minutes is None else interval_minutes
            repo.update_schedule(
                conn, user_id=user_id, now=now, enabled=new_enabled, interval_minutes=new_interval,
                next_run_at=_next_run_after_change(current, now, new_enabled, new_interval),
            )
            created = False
        schedule = repo.get_schedule(conn, user_id)
    assert schedule is not None
    return ScheduleChange(schedule, created)


def _next_run_after_change(current: Schedule, now: datetime, enabled: bool, interval: int) -> datetime | None:
    if current.locked_by is not None:
        # Even an expired lease owns nextRunAt until the run finishes, is taken over or unlocked.
        return None
    enabling = enabled and not current.enabled
    interval_changed = interval != current.interval_minutes
    if enabled and (enabling or interval_changed):
        return rescheduled_after_change(now, current.run_slot, interval)
    return None


def get_schedule(engine: Engine, user_id: str) -> Schedule:
    with engine.connect() as conn:
        schedule = repo.get_schedule(conn, user_id)
    if schedule is None:
        raise UnknownUser(f"no schedule for user {user_id!r}")
    return schedule
