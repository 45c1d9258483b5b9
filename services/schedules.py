"""Schedules: set, show, list and seed them. Each method owns its transaction and its clock read.

How nextRunAt moves when settings change (also in README "Semantics"):
- a new interval schedule is due at once (nextRunAt = now); a new calendar schedule at its first
  occurrence after now;
- disabling leaves nextRunAt alone; a run in flight still finishes and is recorded;
- enabling, or changing the rule (interval, or expression, zone, spread), of a schedule that is not
  running sets nextRunAt = max(now, last slot + interval) for an interval (due now if it never
  ran), the first occurrence after now for a calendar schedule;
- while a run holds the lease, only the settings change: the run's fenced finish computes the
  next slot from the new rule;
- resuming a paused schedule sets nextRunAt to its next slot from now (the slots missed while
  paused are skipped, never run as a burst); a leased row keeps nextRunAt, as above.

A schedule's own retries / retry backoff / pause-after (NULL: the settings default) are set by
operators only (the CLI, the admin API and pages); `effective_policy` says what applies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from sqlalchemy import Engine

from core import queries, writes
from core.clock import Clock
from core.calendar import (
    ScheduleRule,
    next_slot,
    next_slot_after_change,
    parse_cron,
    rule_of,
    spread_start,
    stored_rule,
    upcoming_slots,
    validate_spread,
)
from core.domain import Calendar, Schedule, ScheduleFilter
from core.exceptions import InvalidInput, UnknownUser
from core.retry import RetryDefaults, RetryPolicy, effective_retry_policy
from core.scheduling import validate_interval, validate_pause_after, validate_retries, validate_retry_backoff, validate_user_id

logger = logging.getLogger(__name__)


_IMPORT_CHUNK = 5000  # rows per INSERT statement of a bulk import (bounded packet size)


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


@dataclass(frozen=True)
class CalendarChange:
    """What a caller asked of the calendar columns: `cron` an expression (switch to or stay a
    calendar schedule), `time_zone`/`spread` None keep the current ones; `to_interval` switches back."""

    cron: object | None = None
    time_zone: object | None = None
    spread: object | None = None
    to_interval: bool = False


class Default(Enum):
    """Put a schedule's own value back to the settings default (the column to NULL)."""

    USE = "default"


USE_DEFAULT = Default.USE


# The failure policy that applies to a schedule (`Schedules.effective_policy`): core's one type,
# named here because the web and the CLI import the service layer, not core.
FailurePolicy = RetryPolicy


@dataclass(frozen=True)
class PolicyChange:
    """What a caller asked of the failure policy, as typed: None keeps a value, USE_DEFAULT puts
    the settings default back; anything else is checked by the core rules (InvalidInput)."""

    retries: object | None = None
    retry_backoff: object | None = None
    pause_after: object | None = None

    def columns(self) -> dict[str, int | None]:
        """The columns to write, validated (nothing is written when one value is refused)."""
        asked = (("retries", self.retries, validate_retries), ("retryBackoffSeconds", self.retry_backoff, validate_retry_backoff),
                 ("pauseAfter", self.pause_after, validate_pause_after))
        values: dict[str, int | None] = {}
        for column, value, rule in asked:
            if value is None:
                continue
            try:
                values[column] = None if value is USE_DEFAULT else rule(value)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
        return values


@dataclass(frozen=True)
class Resumed:
    """The schedule after a resume, the "now" it was read at, and whether it was paused."""

    schedule: Schedule
    now: datetime
    resumed: bool


def _slot_after_resume(current: Schedule, now: datetime) -> datetime | None:
    """The next slot from now of a paused schedule: its nextRunAt if still ahead, else the first
    slot of its cadence after now (the missed ones skipped, as a late run's finish skips them).
    None while a run holds the lease: its finish sets the next slot."""
    if current.locked_by is not None:
        return None
    if current.retrying and current.run_slot is not None:  # nextRunAt is a retry's time, not a slot
        return next_slot(rule_of(current), current.run_slot, now).at
    if current.next_run_at >= now:
        return current.next_run_at
    return next_slot(rule_of(current), current.next_run_at, now).at


def _checked(user_id: str, interval: object | None) -> tuple[str, int | None]:
    try:
        validate_user_id(user_id)
        return user_id, (validate_interval(interval) if interval is not None else None)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _calendar(change: CalendarChange, current: Schedule | None) -> Calendar | None:
    """The calendar columns to write (None: leave them), validated: InvalidInput names the problem."""
    wants_cron = change.cron is not None
    if change.to_interval and wants_cron:
        raise InvalidInput("a schedule is an interval or a cron expression, not both")
    if change.to_interval:
        return Calendar(None) if current is not None and current.cron_expr is not None else None
    is_cron = wants_cron or (current is not None and current.cron_expr is not None)
    if not is_cron:
        if change.time_zone is not None or change.spread is not None:
            raise InvalidInput("a time zone and a spread go with a cron expression (an interval schedule's start is spread by itself)")
        return None
    if not wants_cron and change.time_zone is None and change.spread is None:
        return None
    expression = change.cron if wants_cron else (current.cron_expr if current is not None else None)
    zone = change.time_zone if change.time_zone is not None else (current.time_zone if current is not None else "UTC")
    spread = change.spread if change.spread is not None else (current.spread_seconds if current is not None else 0)
    try:
        rule = parse_cron(expression, zone)
        return Calendar(rule.expression, rule.zone_name, validate_spread(spread))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _rule(user_id: str, interval: int, calendar: Calendar | None, current: Schedule | None) -> ScheduleRule:
    if calendar is None and current is not None:
        calendar = Calendar(current.cron_expr, current.time_zone, current.spread_seconds)
    if calendar is None:
        return ScheduleRule(interval)
    return stored_rule(user_id=user_id, interval_minutes=interval, cron_expr=calendar.cron_expr,
                       time_zone=calendar.time_zone, spread_seconds=calendar.spread_seconds)


def _next_run_after_change(current: Schedule, now: datetime, enabled: bool, rule: ScheduleRule, *, spread: bool) -> datetime | None:
    if current.locked_by is not None:
        # Even an expired lease owns nextRunAt until the run finishes, is taken over or unlocked.
        return None
    enabling = enabled and not current.enabled
    old_rule = rule_of(current)
    if enabled and (enabling or rule != old_rule):
        after = next_slot_after_change(rule, now, current.run_slot)
        if spread and rule.cron is None and rule.interval_minutes != old_rule.interval_minutes:
            return spread_start(current.user_id, after, rule.interval_minutes)
        return after
    return None


class Schedules:
    """The schedule operations, on an engine and a clock only (the behaviour tests build one on a
    bare database); `default_interval` is DEFAULT_INTERVAL_MINUTES, `spread_start`
    SPREAD_START_TIMES (off unless asked: an interval schedule is then due at once, as it always was)."""

    def __init__(self, engine: Engine, clock: Clock, *, default_interval: int, spread_start: bool = False,
                 policy_defaults: RetryDefaults = RetryDefaults()) -> None:
        self.engine = engine
        self.clock = clock
        self.default_interval = default_interval
        self.spread_start = spread_start
        self.policy_defaults = policy_defaults  # DEFAULT_RETRIES, RETRY_BACKOFF_SECONDS, PAUSE_AFTER_FAILED_SLOTS

    def effective_policy(self, schedule: Schedule) -> FailurePolicy:
        """What applies to `schedule`: its own values, the settings defaults where it has none (the
        rule the run outcome follows: core.retry.effective_retry_policy)."""
        return effective_retry_policy(schedule, self.policy_defaults)

    def set(
        self, user_id: str, *, interval: object | None = None, enabled: bool | None = None, create: bool = True,
        calendar: CalendarChange = CalendarChange(), policy: PolicyChange = PolicyChange(),
    ) -> ScheduleChange:
        """Validate, then create or change a schedule in one transaction (InvalidInput/UnknownUser
        raise before anything is written). An interval given without `calendar` switches a
        calendar schedule back to that interval. `policy` is for operators only: the callers
        that act for a user never pass it."""
        user_id, interval_minutes = _checked(user_id, interval)
        policy_columns = policy.columns()
        if interval_minutes is not None and calendar.cron is None:
            calendar = replace(calendar, to_interval=True)
        with self.engine.begin() as conn:
            now = self.clock.now(conn)
            current = queries.get_schedule(conn, user_id, for_update=True)
            columns = _calendar(calendar, current)
            if current is None:
                if not create:
                    raise UnknownUser(f"no schedule for user {user_id!r}")
                new_interval = interval_minutes or self.default_interval
                rule = _rule(user_id, new_interval, columns, None)
                writes.insert_schedule(
                    conn,
                    user_id=user_id,
                    enabled=True if enabled is None else enabled,
                    interval_minutes=new_interval,
                    next_run_at=self._first_slot(user_id, rule, now),
                    now=now,
                    calendar=columns,
                )
                created = True
            else:
                new_enabled = current.enabled if enabled is None else enabled
                new_interval = current.interval_minutes if interval_minutes is None else interval_minutes
                writes.update_schedule(
                    conn, user_id=user_id, now=now, enabled=new_enabled, interval_minutes=new_interval,
                    next_run_at=_next_run_after_change(current, now, new_enabled, _rule(user_id, new_interval, columns, current),
                                                       spread=self.spread_start),
                    calendar=columns,
                )
                created = False
            writes.update_failure_policy(conn, user_id=user_id, now=now, values=policy_columns)
            schedule = queries.get_schedule(conn, user_id)
        assert schedule is not None  # written in this transaction
        return ScheduleChange(schedule, created)

    def _first_slot(self, user_id: str, rule: ScheduleRule, now: datetime) -> datetime:
        """A new calendar schedule waits for its first occurrence; a new interval schedule is due
        at once, or at its phase within the first interval when start times are spread."""
        if rule.cron is not None:
            return rule.after(now)
        return spread_start(user_id, now, rule.interval_minutes) if self.spread_start else now

    def update(
        self, user_id: str, *, enabled: bool | None, interval: object | None, create: bool,
        calendar: CalendarChange = CalendarChange(), policy: PolicyChange = PolicyChange(),
    ) -> Snapshot:
        """`set`, then the schedule as the web shows it (with the "now" it was read at)."""
        change = self.set(user_id, interval=interval, enabled=enabled, create=create, calendar=calendar, policy=policy)
        return self.read(change.schedule.user_id)

    def resume(self, user_id: str) -> Resumed:
        """Resume a paused schedule (the user's or an admin's request): claimed again from its next
        slot from now, its failed-slot count back to 0, pausedAt and pausedReason cleared (the
        history keeps the "paused" row that says why). A schedule that is not paused is left
        exactly as it is (`resumed` False): resuming twice, or a stale page's button, is harmless
        and cannot move nextRunAt. UnknownUser when there is no schedule."""
        with self.engine.begin() as conn:
            now = self.clock.now(conn)
            current = queries.get_schedule(conn, user_id, for_update=True)
            if current is None:
                raise UnknownUser(f"no schedule for user {user_id!r}")
            resumed = current.paused and writes.resume_schedule(conn, user_id=user_id, now=now, next_run_at=_slot_after_resume(current, now))
            schedule = queries.get_schedule(conn, user_id)
        assert schedule is not None  # read in this transaction
        if resumed:
            logger.info("resumed user=%s, paused since %s (%s); next run at %s", user_id, current.paused_at, current.paused_reason,
                        schedule.next_run_at)
        return Resumed(schedule, now, resumed)

    def upcoming(self, user_id: str, count: int) -> list[datetime]:
        """The next `count` slots of a stored schedule (UnknownUser if none)."""
        with self.engine.connect() as conn:
            schedule, now = queries.get_schedule(conn, user_id), self.clock.now(conn)
        if schedule is None:
            raise UnknownUser(f"no schedule for user {user_id!r}")
        return upcoming_slots(schedule, now, count)

    def preview(self, *, cron: object | None, time_zone: object | None, interval: object | None, count: int,
                after: datetime | None = None) -> list[datetime]:
        """The next `count` slots of an expression in a zone, or of an interval, after `after`
        (default now), touching no schedule: the settings page's preview as the user types."""
        try:
            if cron is not None:
                rule = ScheduleRule(0, parse_cron(cron, "UTC" if time_zone is None else time_zone))
            else:
                rule = ScheduleRule(validate_interval(interval))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if after is None:
            with self.engine.connect() as conn:
                after = self.clock.now(conn)
        return rule.upcoming(after, count)

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

    def create_many(self, user_ids: Sequence[str], *, interval: object) -> int:
        """Create interval schedules for many new users in one transaction (a bulk import), each
        first due as `set` would make it (spread over the interval with SPREAD_START_TIMES).
        Every id and the interval are checked before anything is written; an existing id fails the
        whole import (the database's primary key)."""
        checked = [_checked(user_id, interval) for user_id in user_ids]
        with self.engine.begin() as conn:
            now = self.clock.now(conn)
            rows = [
                {"userId": user_id, "enabled": True, "intervalMinutes": minutes, "attempt": 0, "createdAt": now, "updatedAt": now,
                 "nextRunAt": self._first_slot(user_id, ScheduleRule(minutes or self.default_interval), now)}
                for user_id, minutes in checked
            ]
            for start in range(0, len(rows), _IMPORT_CHUNK):
                writes.insert_schedules(conn, rows[start:start + _IMPORT_CHUNK])
        return len(rows)

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
