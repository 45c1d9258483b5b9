"""Fixed-rate rescheduling and input validation: properties, not examples."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.scheduling import (
    next_fixed_rate_slot,
    rescheduled_after_change,
    validate_interval,
    validate_user_id,
)

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
)
intervals = st.integers(min_value=1, max_value=1440)
lateness = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30))


@given(slot=moments, interval=intervals, late=lateness)
def test_next_slot_is_on_the_grid_in_the_future_and_the_first_such(slot, interval, late) -> None:
    now = slot + late
    step = timedelta(minutes=interval)
    nxt = next_fixed_rate_slot(slot, interval, now)

    assert nxt.at > now, "never schedules into the past"
    assert (nxt.at - slot) % step == timedelta(0), "stays on the slot grid (fixed rate, no drift)"
    assert nxt.at - step <= now, "the first grid slot after now: no slot is skipped needlessly"
    assert nxt.skipped == (nxt.at - slot) // step - 1, "every grid slot between is counted as skipped"


@given(slot=moments, interval=intervals, run_time=st.timedeltas(min_value=timedelta(0), max_value=timedelta(minutes=1)))
def test_a_run_that_ends_before_its_next_slot_skips_nothing(slot, interval, run_time) -> None:
    if run_time >= timedelta(minutes=interval):
        return
    nxt = next_fixed_rate_slot(slot, interval, slot + run_time)
    assert (nxt.at, nxt.skipped) == (slot + timedelta(minutes=interval), 0)


@given(slot=moments, old=intervals, new=intervals, late=lateness)
def test_an_interval_change_applies_from_the_slot_that_ran(slot, old, new, late) -> None:
    now = slot + late
    nxt = next_fixed_rate_slot(slot, new, now)
    assert (nxt.at - slot) % timedelta(minutes=new) == timedelta(0)
    after_change = rescheduled_after_change(now, slot, new)
    assert after_change >= now
    assert after_change == max(now, slot + timedelta(minutes=new))


def test_a_schedule_that_never_ran_is_due_now_after_a_change() -> None:
    now = datetime(2026, 1, 1, 12)
    assert rescheduled_after_change(now, None, 30) == now


@pytest.mark.parametrize("good,expected", [(1, 1), (1440, 1440), ("15", 15), (" 7 ", 7)])
def test_valid_intervals(good, expected) -> None:
    assert validate_interval(good) == expected


@pytest.mark.parametrize(
    "bad", [0, 1441, -5, "abc", "1.5", 2.5, "", None, True, "1e3", "+-5", "-+5", "+5", "-5", "\u0665", "\uff15", "1_0", "\u00b2"]
)
def test_invalid_intervals_name_the_limits(bad) -> None:
    with pytest.raises(ValueError, match="between 1 and 1440"):
        validate_interval(bad)


@pytest.mark.parametrize("bad", ["", "x" * 65, "tab\there", "nul\x00"])
def test_invalid_user_ids(bad) -> None:
    with pytest.raises(ValueError):
        validate_user_id(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "c1\x85x", "c1\x9bx",  # C1 controls (NEL, CSI)
        "evil\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE: shows as "evilexe.png"
        "zero\u200bwidth", "\ufeffbom", "soft\u00adhyphen", "iso\u2066late",  # other format characters
        "line\u2028sep", "para\u2029sep",
    ],
)
def test_user_ids_refuse_control_and_format_characters(bad: str) -> None:
    with pytest.raises(ValueError, match="control or format characters"):
        validate_user_id(bad)


@pytest.mark.parametrize("bad", ["alice ", " alice", "alice\u00a0", "\u3000alice", " ", "   ", "\u00a0"])
def test_user_ids_refuse_leading_or_trailing_whitespace(bad: str) -> None:
    """'alice ' must never reach a database that may compare it equal to 'alice'."""
    with pytest.raises(ValueError, match="whitespace"):
        validate_user_id(bad)


def test_interval_errors_are_the_same_clear_message_for_every_bad_text() -> None:
    for bad in ("+-5", "\u0665"):
        with pytest.raises(ValueError) as caught:
            validate_interval(bad)
        assert str(caught.value) == f"interval must be a whole number of minutes between 1 and 1440, got {bad!r}"


def test_user_ids_may_be_any_text_up_to_64_characters() -> None:
    for uid in ["a", "ü" * 64, "user@example.com", "a b/c?d=e", "日本語", "Zoë O'Brien", "🦊fox", "한글", "ㄱ", "ﾊﾝｶｸ"]:
        assert validate_user_id(uid) == uid


NFD_JOSE = "jose\u0301"  # "josé" typed decomposed: e + COMBINING ACUTE ACCENT


def test_user_ids_must_be_in_nfc_form_and_are_not_normalized() -> None:
    """NFC and NFD "josé" look identical everywhere: they must not be two schedules. The NFD one is
    refused, not mapped onto the NFC one (which may be somebody else's)."""
    assert validate_user_id("jos\u00e9") == "jos\u00e9"
    with pytest.raises(ValueError, match="NFC form"):
        validate_user_id(NFD_JOSE)
    with pytest.raises(ValueError, match="NFC form"):
        validate_user_id("\u212b")  # ANGSTROM SIGN: its NFC form is Å (U+00C5)


INVISIBLE = [
    "\u3164", "\u115f", "\u1160", "\u2800", "\u034f", "\uffa0", "\u17b4", "\u17b5", "\ufe00", "\ufe0f",
    "\U000e0100", "\U000e01ef", "\u180b", "\u180f", "\U000e0020", "\U000e007f", "\u2065",
]


@pytest.mark.parametrize("ch", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
@pytest.mark.parametrize("where", ["alone", "at the end", "inside"])
def test_user_ids_refuse_default_ignorable_and_filler_characters(ch: str, where: str) -> None:
    candidate = {"alone": ch, "at the end": "alice" + ch, "inside": "al" + ch + "ice"}[where]
    with pytest.raises(ValueError, match=f"U\\+{ord(ch):04X}"):
        validate_user_id(candidate)
