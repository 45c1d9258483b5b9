"""Pure scheduling rules: no I/O, so they are unit- and property-tested in isolation.

Fixed rate: a run for slot S is followed by slot S + interval. Slots that are already in the past
when the run ends are skipped (no burst of catch-up runs) and counted.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

MIN_INTERVAL_MINUTES = 1
MAX_INTERVAL_MINUTES = 1440
MAX_USER_ID_LENGTH = 64
MIN_RETENTION_DAYS = 1  # `prune --days 0` (or less) would delete the run that just finished
MAX_RETENTION_DAYS = 36_500  # a hundred years; far beyond it the cutoff date is out of range


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
    """Return the interval as an int, or raise ValueError naming the limits.

    Text must be ASCII digits with surrounding blanks at most: no sign, and no other script's
    digits (`int()` alone would read "٥" as 5 and fail on "+-5" with its own message).
    """
    limits = f"a whole number of minutes between {MIN_INTERVAL_MINUTES} and {MAX_INTERVAL_MINUTES}"
    if isinstance(value, bool):
        raise ValueError(f"interval must be {limits}, got {value!r}")
    if isinstance(value, str):
        stripped = value.strip()
        if not (stripped.isascii() and stripped.isdigit()):
            raise ValueError(f"interval must be {limits}, got {value!r}")
        value = int(stripped)
    if not isinstance(value, int):
        raise ValueError(f"interval must be {limits}, got {value!r}")
    if not MIN_INTERVAL_MINUTES <= value <= MAX_INTERVAL_MINUTES:
        raise ValueError(f"interval must be {limits}, got {value}")
    return value


# Control (Cc: C0, DEL, C1), format (Cf: bidi overrides, zero-width characters, BOM...), lone
# surrogates (not storable as UTF-8), line and paragraph separators: invisible or misleading in a
# user id shown to an operator or in a log line.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def validate_user_id(value: str) -> str:
    """User ids are non-empty text of at most 64 characters, compared exactly: no control or
    format characters, no leading or trailing whitespace (so "alice " can never stand for "alice")."""
    if not isinstance(value, str) or value == "":
        raise ValueError("user id must be a non-empty string")
    if len(value) > MAX_USER_ID_LENGTH:
        raise ValueError(f"user id must be at most {MAX_USER_ID_LENGTH} characters, got {len(value)}")
    bad = next((ch for ch in value if unicodedata.category(ch) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"user id must not contain control or format characters (found U+{ord(bad):04X})")
    if value.strip() != value:
        raise ValueError("user id must not start or end with whitespace")
    return value
