"""Pure scheduling rules: no I/O, so they are unit- and property-tested in isolation.

Fixed rate: a run for slot S is followed by slot S + interval. Slots that are already in the past
when the run ends are skipped (no burst of catch-up runs) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MIN_INTERVAL_MINUTES = 1
MAX_INTERVAL_MINUTES = 1440
MAX_USER_ID_LENGTH = 64


@dataclass(frozen=True)
class NextSlot:
    at: datetime
    skipped: int


def next_fixed_rate_slot(slot: datetime, interval_minutes: int, now: datetime) -> NextSlot:
    """The first slot S + k*interval (k >= 1) strictly after `now`; `skipped` = k - 1."""
    step = timedelta(minutes=interval_minutes)
    candidate = slot + step
    if candidate > now:
        return NextSlot(candidate, 0)
    behind = (now - candidate) // step + 1  # whole steps needed to pass `now`
    return NextSlot(candidate + behind * step, behind)


def rescheduled_after_change(now: datetime, last_slot: datetime | None, interval_minutes: int) -> datetime:
    """nextRunAt after enabling or changing the interval of a schedule that is not running.

    The cadence continues from the last run's slot with the new interval, but never in the past:
    a schedule that never ran, or whose next slot has already gone by, is due now.
    """
    if last_slot is None:
        return now
    return max(now, last_slot + timedelta(minutes=interval_minutes))


def validate_interval(value: object) -> int:
    """Return the interval as an int, or raise ValueError naming the limits."""
    limits = f"a whole number of minutes between {MIN_INTERVAL_MINUTES} and {MAX_INTERVAL_MINUTES}"
    if isinstance(value, bool):
        raise ValueError(f"interval must be {limits}, got {value!r}")
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped.lstrip("+-").isdigit():
            raise ValueError(f"interval must be {limits}, got {value!r}")
        value = int(stripped)
    if not isinstance(value, int):
        raise ValueError(f"interval must be {limits}, got {value!r}")
    if not MIN_INTERVAL_MINUTES <= value <= MAX_INTERVAL_MINUTES:
        raise ValueError(f"interval must be {limits}, got {value}")
    return value


def validate_user_id(value: str) -> str:
    """User ids are any non-empty text of at most 64 characters, without control characters."""
    if not isinstance(value, str) or value == "":
        raise ValueError("user id must be a non-empty string")
    if len(value) > MAX_USER_ID_LENGTH:
        raise ValueError(f"user id must be at most {MAX_USER_ID_LENGTH} characters, got {len(value)}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("user id must not contain control characters")
    return value
