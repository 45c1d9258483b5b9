"""Pure scheduling rules: no I/O, so they are unit- and property-tested in isolation.

Fixed rate: a run for slot S is followed by slot S + interval. Slots that are already in the past
when the run ends are skipped (no burst of catch-up runs) and counted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

MIN_INTERVAL_MINUTES = 1
MAX_INTERVAL_MINUTES = 1440
MAX_USER_ID_LENGTH = 64
MIN_RETENTION_DAYS = 1  # `prune --days 0` (or less) would delete the run that just finished
MAX_RETENTION_DAYS = 36_500  # a hundred years; far beyond it the cutoff date is out of range
# When a run fails (issue 17): the ranges of a schedule's own values (and of the settings defaults).
MAX_RETRIES = 10
MIN_RETRY_BACKOFF_SECONDS = 1
MAX_RETRY_BACKOFF_SECONDS = 86_400
MIN_PAUSE_AFTER = 1  # 0 is not a threshold: "off" (stored 0) never pauses
MAX_PAUSE_AFTER = 1000
PAUSE_NEVER = ("off", "never")  # the words for "never pause this schedule"


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


def _whole_number(value: object) -> int | None:
    """An int, or text of ASCII digits (blanks around); None for anything else (bool, float, sign)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        stripped = value.strip()
        return int(stripped) if stripped.isascii() and stripped.isdigit() and len(stripped) <= 12 else None
    return value if isinstance(value, int) else None


def validate_retries(value: object) -> int:
    """Attempts after the first within one slot, 0 to 10; ValueError naming the limits otherwise."""
    number = _whole_number(value)
    if number is None or not 0 <= number <= MAX_RETRIES:
        raise ValueError(f"retries must be a whole number from 0 to {MAX_RETRIES}, got {value!r}")
    return number


_BACKOFF = re.compile(r"([0-9]{1,6})\s*(s|m|h)?")
_BACKOFF_UNITS = {"s": 1, "m": 60, "h": 3600}


def validate_retry_backoff(value: object) -> int:
    """The base delay before a retry in whole seconds, 1 s to 24 h: an int of seconds, or text such
    as "30", "30s", "5m", "1h"; ValueError naming the limits otherwise."""
    limits = f"a duration from {MIN_RETRY_BACKOFF_SECONDS}s to 24h such as 30s, 5m or 1h (a bare number is seconds)"
    seconds: int | None = None
    if isinstance(value, str):
        match = _BACKOFF.fullmatch(value.strip())
        if match is not None:
            seconds = int(match.group(1)) * _BACKOFF_UNITS[match.group(2) or "s"]
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    if seconds is None or not MIN_RETRY_BACKOFF_SECONDS <= seconds <= MAX_RETRY_BACKOFF_SECONDS:
        raise ValueError(f"retry backoff must be {limits}, got {value!r}")
    return seconds


def validate_pause_after(value: object) -> int:
    """Consecutive failed slots before the schedule pauses: 1 to 1000, or "off"/"never" (stored as
    0: never pause). A 0 is refused rather than read as "never": it looks like "pause at once"."""
    if isinstance(value, str) and value.strip().lower() in PAUSE_NEVER:
        return 0
    number = _whole_number(value)
    if number == 0:
        raise ValueError('pause after must be from 1 to 1000 failed slots, or "off" to never pause; 0 is refused (it reads as "pause at once")')
    if number is None or not MIN_PAUSE_AFTER <= number <= MAX_PAUSE_AFTER:
        raise ValueError(f'pause after must be a whole number of failed slots from {MIN_PAUSE_AFTER} to {MAX_PAUSE_AFTER}, or "off", got {value!r}')
    return number


# Control (Cc: C0, DEL, C1), format (Cf: bidi overrides, zero-width characters, BOM...), lone
# surrogates (not storable as UTF-8), line and paragraph separators: invisible or misleading in a
# user id shown to an operator or in a log line.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


# Default-ignorable code points that are not format characters (Unicode's
# Default_Ignorable_Code_Point property, minus the Cf ones refused above) and the fillers and blanks
# that render as nothing: an id made of them, or ending in them, looks like another id or like none.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG / JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ / AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS (and the vowel separator)
    (0x2060, 0x206F),  # word joiner, invisible operators, deprecated format controls (U+2065 unassigned)
    (0x2800, 0x2800),  # BRAILLE PATTERN BLANK (not default-ignorable, but blank)
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTORS 1-16
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),  # unassigned, reserved default-ignorable
    (0xE0000, 0xE0FFF),  # tag characters, VARIATION SELECTORS 17-256 and the reserved rest of the block
)


def _invisible(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _INVISIBLE_RANGES)


def validate_user_id(value: str) -> str:
    """User ids are non-empty text of at most 64 characters, compared exactly, checked by this one
    rule at every entry point (CLI, API, forms, tokens' `sub`): no control or format characters, no
    default-ignorable or filler characters, Unicode NFC form, no leading or trailing whitespace (so
    "alice " can never stand for "alice"). A non-NFC id is refused, not normalized: normalizing
    could silently map it onto another user's schedule."""
    if not isinstance(value, str) or value == "":
        raise ValueError("user id must be a non-empty string")
    if len(value) > MAX_USER_ID_LENGTH:
        raise ValueError(f"user id must be at most {MAX_USER_ID_LENGTH} characters, got {len(value)}")
    bad = next((ch for ch in value if unicodedata.category(ch) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"user id must not contain control or format characters (found U+{ord(bad):04X})")
    bad = next((ch for ch in value if _invisible(ch)), None)
    if bad is not None:
        raise ValueError(f"user id must not contain invisible (default-ignorable or filler) characters (found U+{ord(bad):04X})")
    if not unicodedata.is_normalized("NFC", value):
        raise ValueError("user id must be in Unicode NFC form (composed characters, as keyboards type them); "
                         "it is not normalized for you: its NFC form may be another user's id")
    if value.strip() != value:
        raise ValueError("user id must not start or end with whitespace")
    return value
