"""Calendar schedules across DST: the rule against a brute-force walk of the clock, and named cases.

The oracle walks real time minute by minute and reads the wall clock (UTC -> local is never
ambiguous), so it shares nothing with core.calendar but zoneinfo:
- frequent rule (hour field `*`): a minute is a slot when its wall time matches;
- fixed-hour rule: a minute is a slot when its wall time matches and has not been seen before in
  the walk (a repeated time runs at its first occurrence), or when the clock jumped over a matching
  wall time to reach it (a missing time runs at the first valid instant after it).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.calendar import average_interval_minutes, local_time, next_occurrence, occurrences, parse_cron, spread_offset, spread_start

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
ZONES = [
    "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Pacific/Apia",
    "Europe/London", "America/Sao_Paulo", "Asia/Tehran", "Pacific/Chatham", "America/Havana",
    "Africa/Casablanca", "Europe/Moscow", "America/St_Johns", "Australia/Sydney", "Asia/Gaza",
    "Antarctica/Troll", "Europe/Dublin", "America/Godthab", "Pacific/Auckland", "UTC",
]


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


@lru_cache(maxsize=256)
def _transitions(zone_name: str, year: int) -> tuple[datetime, ...]:
    """The instants (naive UTC, to the minute) where the zone's offset changes in `year`."""
    zone = ZoneInfo(zone_name)

    def offset(u: datetime) -> timedelta | None:
        return u.replace(tzinfo=UTC).astimezone(zone).utcoffset()

    found = []
    day = datetime(year, 1, 1)
    while day.year == year:
        nxt = day + timedelta(days=1)
        if offset(day) != offset(nxt):
            lo, hi = day, nxt
            while hi - lo > MINUTE:
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid <= lo:
                    mid = lo + MINUTE
                if offset(mid) == offset(lo):
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        day = nxt
    return tuple(found)


def _brute_force(minutes: set[int], hours: set[int] | None, weekdays: set[int] | None,
                 zone_name: str, start: datetime, end: datetime) -> list[datetime]:
    """Slots in (start, end], walking every real minute from six hours before `start` (longer than
    any repeated stretch of wall-clock time in the sampled zones)."""
    zone = ZoneInfo(zone_name)

    def matches(wall: datetime) -> bool:
        return (wall.minute in minutes and (hours is None or wall.hour in hours)
                and (weekdays is None or (wall.isoweekday() % 7) in weekdays))

    slots = []
    seen: set[datetime] = set()
    u = start - timedelta(hours=6)
    previous = _wall(u, zone)
    while u < end:
        u += MINUTE
        wall = _wall(u, zone)
        if hours is None:
            slot = matches(wall)
        else:
            jumped = previous + MINUTE
            skipped_match = False
            while jumped < wall:
                skipped_match = skipped_match or matches(jumped)
                jumped += MINUTE
            slot = skipped_match or (matches(wall) and wall not in seen)
            seen.add(wall)
        previous = wall
        if slot and u > start:
            slots.append(u)
    return slots


def _field(values: set[int] | None) -> str:
    return "*" if values is None else ",".join(str(v) for v in sorted(values))


minute_sets = st.one_of(
    st.sets(st.sampled_from([0, 15, 30, 45, 1, 29, 59]), min_size=1, max_size=3),
    st.sampled_from([set(range(0, 60, 15)), set(range(0, 60, 30)), set(range(0, 60, 20))]),
)
hour_sets = st.one_of(st.none(), st.sets(st.sampled_from([0, 1, 2, 3, 4, 22, 23, 12]), min_size=1, max_size=3))
weekday_sets = st.one_of(st.none(), st.none(), st.sets(st.integers(0, 6), min_size=1, max_size=4))


@settings(max_examples=60, deadline=None)
@given(zone_name=st.sampled_from(ZONES), year=st.integers(1980, 2037), pick=st.integers(0, 10),
       shift=st.integers(-180, 60), minutes=minute_sets, hours=hour_sets, weekdays=weekday_sets)
def test_slots_match_a_minute_by_minute_walk_of_the_clock(zone_name, year, pick, shift, minutes, hours, weekdays) -> None:
    transitions = _transitions(zone_name, year)
    around = transitions[pick % len(transitions)] if transitions else datetime(year, 6, 1)
    start = around + timedelta(minutes=shift)
    end = start + timedelta(hours=12)
    expression = f"{_field(minutes)} {_field(hours)} * * {_field(weekdays)}"
    rule = parse_cron(expression, zone_name)

    expected = _brute_force(minutes, hours, weekdays, zone_name, start, end)
    got = []
    moment = start
    while True:
        moment = next_occurrence(rule, moment)
        if moment > end:
            break
        got.append(moment)
    assert got == expected, expression


def _preview(expression: str, zone: str, after: str, count: int) -> list[str]:
    return [local_time(u, zone).strftime("%Y-%m-%d %H:%M%z")
            for u in occurrences(parse_cron(expression, zone), datetime.fromisoformat(after), count)]


def test_berlin_spring_missing_time_runs_once_at_the_end_of_the_gap() -> None:
    assert _preview("30 2 * * *", "Europe/Berlin", "2026-03-28 12:00", 3) == [
        "2026-03-29 03:00+0200", "2026-03-30 02:30+0200", "2026-03-31 02:30+0200"]


def test_berlin_autumn_repeated_time_runs_once_at_its_first_occurrence() -> None:
    assert _preview("30 2 * * *", "Europe/Berlin", "2026-10-24 12:00", 2) == [
        "2026-10-25 02:30+0200", "2026-10-26 02:30+0100"]


def test_berlin_hourly_follows_real_time_across_both_changes() -> None:
    for after in ("2026-03-28 22:30", "2026-10-24 21:30"):
        slots = occurrences(parse_cron("0 * * * *", "Europe/Berlin"), datetime.fromisoformat(after), 6)
        assert [b - a for a, b in zip(slots, slots[1:])] == [timedelta(hours=1)] * 5


def test_new_york_weekday_nine_oclock_keeps_local_time_across_dst() -> None:
    assert _preview("0 9 * * MON-FRI", "America/New_York", "2026-03-06 00:00", 3) == [
        "2026-03-06 09:00-0500", "2026-03-09 09:00-0400", "2026-03-10 09:00-0400"]


def test_new_york_fall_back_quarter_hours_run_in_both_passes() -> None:
    slots = occurrences(parse_cron("*/15 * * * *", "America/New_York"), datetime(2026, 11, 1, 5, 0), 8)
    assert [b - a for a, b in zip(slots, slots[1:])] == [timedelta(minutes=15)] * 7


def test_lord_howe_half_hour_shift() -> None:
    # Spring (October): 02:00 -> 02:30. 02:15 does not exist and runs at 02:30 once.
    assert _preview("15 2 * * *", "Australia/Lord_Howe", "2026-10-03 12:00", 2) == [
        "2026-10-04 02:30+1100", "2026-10-05 02:15+1100"]
    # Autumn (April): 02:00 -> 01:30. 01:45 occurs twice and runs once, the first time.
    assert _preview("45 1 * * *", "Australia/Lord_Howe", "2026-04-04 12:00", 2) == [
        "2026-04-05 01:45+1100", "2026-04-06 01:45+1030"]


def test_santiago_midnight_change() -> None:
    # Chile moves its clocks at midnight: on 2026-09-06 00:00 does not exist (-> 01:00).
    assert _preview("0 0 * * *", "America/Santiago", "2026-09-05 00:00", 3) == [
        "2026-09-05 00:00-0400", "2026-09-06 01:00-0300", "2026-09-07 00:00-0300"]
    # And on 2026-04-05 23:xx occurs twice (00:00 -> 23:00): 23:30 runs once.
    assert _preview("30 23 * * *", "America/Santiago", "2026-04-04 12:00", 2) == [
        "2026-04-04 23:30-0300", "2026-04-05 23:30-0400"]


def test_a_zone_whose_rules_changed_samoa_skipped_a_day() -> None:
    # Pacific/Apia jumped from 29 to 31 December 2011: the 30th's 09:00 never happened and runs
    # once at the first valid instant after it (midnight of the 31st).
    assert _preview("0 9 * * *", "Pacific/Apia", "2011-12-29 00:00", 3) == [
        "2011-12-29 09:00-1000", "2011-12-31 00:00+1400", "2011-12-31 09:00+1400"]


def test_a_zone_that_stopped_changing_its_clocks() -> None:
    # Europe/Moscow kept summer time from 2011 (no autumn change): a daily 02:30 runs daily.
    slots = occurrences(parse_cron("30 2 * * *", "Europe/Moscow"), datetime(2011, 10, 28), 4)
    assert [b - a for a, b in zip(slots, slots[1:])] == [timedelta(days=1)] * 3


def test_last_day_of_month() -> None:
    assert _preview("0 9 L * *", "Europe/Berlin", "2028-02-01 00:00", 2) == [
        "2028-02-29 09:00+0100", "2028-03-31 09:00+0200"]


@pytest.mark.parametrize(("expression", "zone", "fragment"), [
    ("0 0 30 2 *", "UTC", "never fires"),
    ("* * * * * *", "UTC", "seconds"),
    ("61 * * * *", "UTC", "invalid cron expression"),
    ("0 9 * *", "UTC", "4 fields"),
    ("nonsense", "UTC", "1 fields"),
    ("", "UTC", "5 fields"),
    ("R * * * *", "UTC", "random"),
    ("0 9 * * *", "Mars/Olympus", "unknown time zone"),
    ("0 9 * * *", "../../etc/passwd", "unknown time zone"),
    ("0 9 * * *", "", "time zone"),
])
def test_bad_input_is_a_value_error_naming_the_problem(expression, zone, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_cron(expression, zone)


@settings(max_examples=50)
@given(user=st.text(max_size=20), bound=st.integers(1, 86400))
def test_spread_offset_is_stable_and_bounded(user, bound) -> None:
    assert 0 <= spread_offset(user, bound) < bound
    assert spread_offset(user, bound) == spread_offset(user, bound)


def test_spread_offset_is_the_same_on_every_host() -> None:
    # A fixed value: SHA-256, not Python's per-process salted hash().
    assert spread_offset("alice", 300) == 107


@settings(max_examples=100)
@given(user=st.text(min_size=1, max_size=20), interval=st.integers(1, 1440),
       moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_a_spread_start_is_within_one_interval_on_the_users_own_grid(user, interval, moment) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    step = timedelta(minutes=interval)
    first = spread_start(user, moment, interval)
    assert moment <= first < moment + step
    assert spread_start(user, moment + step, interval) == first + step, "the same phase every interval"
    assert spread_start(user, first, interval) == first


def test_spread_starts_of_many_users_fill_the_interval_evenly() -> None:
    moment = datetime(2026, 1, 5, 12, 0)
    seconds = [int((spread_start(f"user-{i}", moment, 5) - moment).total_seconds()) for i in range(30_000)]
    counts = [0] * 300
    for s in seconds:
        counts[s] += 1
    assert max(counts) / (sum(counts) / 300) < 1.35


@pytest.mark.parametrize(("expression", "minutes"), [
    ("* * * * *", 1), ("0 * * * *", 60), ("*/15 * * * *", 15), ("0 9 * * *", 1440),
    ("0 9 * * MON-FRI", 7 * 1440 / 5), ("0 9,17 * * SAT,SUN", 7 * 1440 / 4), ("0 0 1 * *", 1461 * 1440 / 48),
])
def test_a_calendar_schedule_counts_at_its_average_interval(expression, minutes) -> None:
    assert average_interval_minutes(expression) == pytest.approx(minutes, rel=0.005)
