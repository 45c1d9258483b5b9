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
