"""Calendar schedules: the next slot of a 5-field cron expression in an IANA time zone.

Pure (no I/O; the zone database is read through `zoneinfo`), so it is property-tested against a
brute-force walk of the clock (tests/unit/test_calendar.py). The rule is cronie's, and README
"Calendar schedules" states it for users:

- An expression that names particular hours (`0 9 * * MON-FRI`, `30 2 * * *`, `0 */2 * * *`) runs
  once per calendar occurrence of its wall-clock time. A time that occurs twice (autumn) runs once,
  at its first occurrence; a time that does not exist (spring) runs once, at the first valid instant
  after it (the end of the gap: 02:30 on a Berlin spring day runs at 03:00 CEST). Several missing
  times of one gap are one slot (a schedule runs once per slot).
- An expression whose hour field is every hour (`0 * * * *`, `*/15 * * * *`) follows real time: it
  runs at every instant whose wall-clock time matches, so a repeated hour runs again and a missing
  hour is simply not there. With whole-hour shifts an hourly schedule runs every real hour, never
  twice in one and never skipping one.

Slots are UTC instants (naive, like every time in the database); the wall-clock arithmetic is done
by croniter on naive local times, the zone's offsets by `zoneinfo`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from core.clock import epoch_ms, from_epoch_ms
from core.domain import Schedule
from core.scheduling import NextSlot, next_fixed_rate_slot, rescheduled_after_change

logger = logging.getLogger(__name__)

MAX_EXPRESSION_LENGTH = 100
MAX_ZONE_LENGTH = 64
MAX_SPREAD_SECONDS = 24 * 3600
# croniter looks this far ahead for the first match; every valid expression fires within 8 years
# (29 February at worst, with 2100 not a leap year).
_NEVER_FIRES_HORIZON_YEARS = 8
# Walls checked before "now" for the frequent rule: a repeated hour's second pass belongs to walls
# already behind the clock. Sampled offsets over this window bound the fold.
_FOLD_LOOKAHEAD = timedelta(hours=26)
_SAMPLE_STEP = timedelta(hours=1)
UTC = timezone.utc


@dataclass(frozen=True)
class CronRule:
    """A validated expression in a zone. `frequent`: the hour field is every hour (real-time rule)."""

    expression: str
    zone: ZoneInfo
    frequent: bool

    @property
    def zone_name(self) -> str:
        return self.zone.key


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("time zone must be an IANA zone name such as Europe/Berlin or UTC")
    if len(name) > MAX_ZONE_LENGTH or not name.isascii():
        raise ValueError(f"unknown time zone {name!r}: use an IANA zone name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA zone name such as Europe/Berlin") from None


@lru_cache(maxsize=4096)
def parse_cron(expression: object, zone_name: object = "UTC") -> CronRule:
    """The rule for `expression` in `zone_name`, or ValueError naming what is wrong.

    Refused: anything but 5 fields (6 would be seconds: finer than the scheduler's minute),
    croniter's random (`R`) and hashed (`H`) forms (not the same on every host), syntax croniter
    rejects, and an expression that never fires (`0 0 30 2 *`)."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError("cron expression must be 5 fields: minute hour day-of-month month day-of-week")
    if len(expression) > MAX_EXPRESSION_LENGTH or not expression.isascii():
        raise ValueError(f"cron expression must be at most {MAX_EXPRESSION_LENGTH} ASCII characters")
    fields = expression.split()
    if len(fields) == 6:
        raise ValueError(f"cron expression {expression!r} has 6 fields: a seconds field is not supported "
                         "(schedules run at most once a minute); use 5 fields: minute hour day-of-month month day-of-week")
    if len(fields) != 5:
        raise ValueError(f"cron expression {expression!r} has {len(fields)} fields; "
                         "use 5: minute hour day-of-month month day-of-week")
    if any(ch in "RrHh" for ch in "".join(fields[:3])):
        raise ValueError(f"cron expression {expression!r}: random (R) and hashed (H) fields are not supported")
    zone = _zone(zone_name)
    normalized = " ".join(fields)
    try:
        itr = croniter(normalized, datetime(2000, 1, 1), max_years_between_matches=_NEVER_FIRES_HORIZON_YEARS)
        itr.get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {expression!r} never fires (no such date)") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None
    hours = itr.expanded[1]
    frequent = hours == ["*"] or set(hours) == set(range(24))
    return CronRule(normalized, zone, frequent)


def _local(instant: datetime, zone: ZoneInfo) -> datetime:
    """Naive wall-clock time of a naive UTC instant."""
    return instant.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: ZoneInfo, fold: int) -> datetime:
    return wall.replace(tzinfo=zone, fold=fold).astimezone(UTC).replace(tzinfo=None)


def _gap_end(wall: datetime, zone: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The transition instant ending the gap `wall` falls in: the first instant in (lo, hi] whose
    wall-clock time is after `wall` (transitions fall on whole seconds)."""
    low, high = 0, int((hi - lo).total_seconds())
    while high - low > 1:
        mid = (low + high) // 2
        if _local(lo + timedelta(seconds=mid), zone) > wall:
            high = mid
        else:
            low = mid
    return lo + timedelta(seconds=high)


def _instants(rule: CronRule, wall: datetime) -> list[datetime]:
    """The UTC slots a matching wall-clock time stands for, by the rule in the module docstring."""
    first, second = _instant(wall, rule.zone, 0), _instant(wall, rule.zone, 1)
    exists_first = _local(first, rule.zone) == wall
    exists_second = _local(second, rule.zone) == wall
    if exists_first or exists_second:
        found = sorted({u for u, ok in ((first, exists_first), (second, exists_second)) if ok})
        return found if rule.frequent else found[:1]
    if rule.frequent:
        return []
    return [_gap_end(wall, rule.zone, min(first, second), max(first, second))]


def _fold_margin(zone: ZoneInfo, after: datetime) -> timedelta:
    """How far the clock may go back within the next day: walls that far behind `after`'s wall time
    can still occur again after it."""
    offsets = [after.replace(tzinfo=UTC).astimezone(zone).utcoffset() or timedelta(0)]
    moment = after
    while moment < after + _FOLD_LOOKAHEAD:
        moment += _SAMPLE_STEP
        offsets.append(moment.replace(tzinfo=UTC).astimezone(zone).utcoffset() or timedelta(0))
    return max(offsets[0] - min(offsets), timedelta(0))


def next_occurrence(rule: CronRule, after: datetime) -> datetime:
    """The first slot strictly after the naive UTC instant `after`.

    Walls are walked in order from `after`'s wall time (less the fold margin). The fixed-hour rule
    maps walls to instants monotonically, so the first instant past `after` is the answer; the
    frequent rule's second pass of a repeated hour can come after a later wall's first pass, so the
    walk goes on until a wall whose first instant is past `after`, and the earliest instant wins."""
    start = _local(after, rule.zone) - _fold_margin(rule.zone, after)
    itr = croniter(rule.expression, start, max_years_between_matches=_NEVER_FIRES_HORIZON_YEARS)
    best: datetime | None = None
    while True:
        wall = itr.get_next(datetime)
        instants = _instants(rule, wall)
        later = [u for u in instants if u > after]
        if later:
            best = min(later) if best is None else min(best, *later)
        if instants and instants[0] > after:
            assert best is not None
            return best


def occurrences(rule: CronRule, after: datetime, count: int) -> list[datetime]:
    """The next `count` occurrences after `after`."""
    return ScheduleRule(0, rule).upcoming(after, count)


@dataclass(frozen=True)
class ScheduleRule:
    """How one schedule's slots follow each other: every `interval_minutes`, or the occurrences of
    `cron` shifted by this user's spread `offset` ("09:00 plus up to 10 minutes")."""

    interval_minutes: int
    cron: CronRule | None = None
    offset: timedelta = timedelta(0)

    @property
    def kind(self) -> str:
        return "interval" if self.cron is None else "cron"

    def after(self, moment: datetime) -> datetime:
        """The first slot strictly after `moment` (an interval's grid starts at `moment`)."""
        if self.cron is None:
            return moment + timedelta(minutes=self.interval_minutes)
        return next_occurrence(self.cron, moment - self.offset) + self.offset

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The next `count` slots after `moment`."""
        slots: list[datetime] = []
        for _ in range(count):
            moment = self.after(moment)
            slots.append(moment)
        return slots


# A schedule far behind (a stopped dispatcher, an every-minute expression) is not walked occurrence
# by occurrence forever: past this many, the next slot is taken after `now` directly and the skipped
# count is this bound (a lower bound, said so in README).
MAX_COUNTED_SKIPS = 10_000


def schedule_rule(*, user_id: str, interval_minutes: int, cron_expr: str | None, time_zone: str | None,
                  spread_seconds: int | None) -> ScheduleRule:
    """The rule of a schedule (columns intervalMinutes, cronExpr, timeZone, spreadSeconds);
    ValueError naming the problem for a bad expression or zone."""
    if cron_expr is None:
        return ScheduleRule(interval_minutes)
    offset = timedelta(seconds=spread_offset(user_id, spread_seconds or 0))
    return ScheduleRule(interval_minutes, parse_cron(cron_expr, time_zone or "UTC"), offset)


def stored_rule(*, user_id: str, interval_minutes: int, cron_expr: str | None, time_zone: str | None,
                spread_seconds: int | None) -> ScheduleRule:
    """`schedule_rule` for a row already stored: every write validates, but a zone can leave the
    zone database or an operator can write SQL by hand. Such a row falls back to its interval
    (logged), so a run's finish never fails over it."""
    try:
        return schedule_rule(user_id=user_id, interval_minutes=interval_minutes, cron_expr=cron_expr,
                             time_zone=time_zone, spread_seconds=spread_seconds)
    except ValueError as exc:
        logger.warning("schedule of user=%s falls back to its interval of %s minutes: %s", user_id, interval_minutes, exc)
        return ScheduleRule(interval_minutes)


def rule_of(schedule: Schedule) -> ScheduleRule:
    """The rule of a schedule read from the database (see `stored_rule`)."""
    return stored_rule(user_id=schedule.user_id, interval_minutes=schedule.interval_minutes, cron_expr=schedule.cron_expr,
                       time_zone=schedule.time_zone, spread_seconds=schedule.spread_seconds)


def upcoming_slots(schedule: Schedule, now: datetime, count: int) -> list[datetime]:
    """The next `count` slots of a stored schedule as of `now` (none while disabled). While a run
    holds the lease nextRunAt is only the lease's expiry, and while a failed run waits for its
    retry it is the retry's time: the slots follow the run's slot instead."""
    if not schedule.enabled or count <= 0:
        return []
    rule = rule_of(schedule)
    if (schedule.locked_by is not None or schedule.retrying) and schedule.run_slot is not None:
        first = next_slot(rule, schedule.run_slot, now).at
    else:
        first = schedule.next_run_at
    return [first, *rule.upcoming(first, count - 1)]


def next_slot_after_change(rule: ScheduleRule, now: datetime, last_slot: datetime | None) -> datetime:
    """nextRunAt after creating a calendar schedule, enabling one or changing its rule while it is
    not running: its first slot after now (an occurrence missed meanwhile is not run late). An
    interval schedule keeps its rule (core.scheduling.rescheduled_after_change)."""
    if rule.cron is None:
        return rescheduled_after_change(now, last_slot, rule.interval_minutes)
    return rule.after(now)


def next_slot(rule: ScheduleRule, slot: datetime, now: datetime) -> NextSlot:
    """Fixed rate for both kinds: the first slot after `slot` that is after `now`; the slots in
    between are skipped (no burst of catch-up runs) and counted."""
    if rule.cron is None:
        return next_fixed_rate_slot(slot, rule.interval_minutes, now)
    candidate, skipped = rule.after(slot), 0
    while candidate <= now:
        if skipped == MAX_COUNTED_SKIPS:
            return NextSlot(rule.after(now), skipped)
        candidate, skipped = rule.after(candidate), skipped + 1
    return NextSlot(candidate, skipped)


_SPREAD = re.compile(r"([0-9]{1,6})\s*(s|m|h)?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def validate_spread(value: object) -> int:
    """A calendar schedule's spread bound in whole seconds, from 0 to 24h: an int of seconds, or
    text such as "600", "90s", "10m", "1h"; ValueError naming the limits otherwise."""
    limits = "a duration from 0 to 24h such as 90s, 10m or 1h"
    if isinstance(value, bool):
        raise ValueError(f"spread must be {limits}, got {value!r}")
    if isinstance(value, str):
        match = _SPREAD.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"spread must be {limits}, got {value!r}")
        value = int(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if not isinstance(value, int) or not 0 <= value <= MAX_SPREAD_SECONDS:
        raise ValueError(f"spread must be {limits}, got {value!r}")
    return value


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    """The IANA zone names this system knows (the settings page's zone picker), read once."""
    return tuple(sorted(available_timezones()))


def spread_start(user_id: str, moment: datetime, interval_minutes: int) -> datetime:
    """The first slot at or after `moment` on this user's grid: the Unix epoch plus a phase within
    the interval (to the millisecond, from the user id: the same on every host) plus whole
    intervals. Schedules created together (a bulk import) then fall due spread evenly over their
    interval instead of all on one second, and fixed rate keeps each one's phase afterwards."""
    step_ms = interval_minutes * 60_000
    phase_ms = spread_offset(user_id, step_ms)
    moment_ms = epoch_ms(moment)
    steps = -((phase_ms - moment_ms) // step_ms)  # ceil((moment - phase) / step)
    return from_epoch_ms(phase_ms + steps * step_ms)


# Four years from a Monday (2024-01-01): every weekday, month length and a leap day weigh as often
# as they do in the long run.
_RATE_SPAN_START = datetime(2024, 1, 1)
_RATE_SPAN_DAYS = 1461


@lru_cache(maxsize=1024)
def average_interval_minutes(expression: str) -> float:
    """The average time between an expression's occurrences over a week, in minutes, for the
    capacity figures: matching days over four years (croniter's own day rule, OR of day-of-month
    and day-of-week) times the times per matching day. DST is ignored: it moves a run, it rarely
    adds or removes one."""
    fields = expression.split()
    itr = croniter(expression, _RATE_SPAN_START)
    minutes, hours = itr.expanded[0], itr.expanded[1]
    per_day = (60 if minutes == ["*"] else len(minutes)) * (24 if hours == ["*"] else len(hours))
    # Matching days: the same day fields at one fixed time of day, walked by croniter.
    days_only = croniter(" ".join(["0", "0", *fields[2:]]), _RATE_SPAN_START - timedelta(minutes=1))
    end = _RATE_SPAN_START + timedelta(days=_RATE_SPAN_DAYS)
    days = 0
    while days_only.get_next(datetime) < end:
        days += 1
    occurrences = days * per_day
    return _RATE_SPAN_DAYS * 1440 / occurrences if occurrences else float("inf")


def local_time(instant: datetime, zone_name: str) -> datetime:
    """The aware local time of a naive UTC instant (for display)."""
    return instant.replace(tzinfo=UTC).astimezone(_zone(zone_name))


def spread_offset(user_id: str, bound_seconds: int) -> int:
    """A stable offset in [0, bound_seconds) from the user id: the same on every host and after
    restarts (SHA-256, not Python's salted hash()), evenly spread over the bound."""
    if bound_seconds <= 0:
        return 0
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % bound_seconds
