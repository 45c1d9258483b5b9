"""RunContext.progress: the task's way to report how far it is. The rules (core/tasks.py):
fractions clamped into 0..1, non-numbers refused, messages cleaned and cut, and never an exception
into the task."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typing_extensions import override

from core.tasks import PROGRESS_MESSAGE_LIMIT, RunContext, clean_message, clean_progress

SLOT = datetime(2026, 1, 5, 12, 0)


def recording_context() -> tuple[RunContext, list[tuple[float, str]]]:
    seen: list[tuple[float, str]] = []
    return RunContext(slot=SLOT, trigger="schedule", attempt=1, reporter=lambda f, m: seen.append((f, m))), seen


def untyped_task_call(context: RunContext) -> Any:
    """progress() as an untyped task sees it: anything may be passed."""
    return context.progress


def test_a_context_is_built_as_before_and_its_progress_does_nothing() -> None:
    context = RunContext(slot=SLOT, trigger="manual", attempt=2)
    context.progress(0.5, "half way")  # a task author's test: no reporter, no error
    assert context == RunContext(slot=SLOT, trigger="manual", attempt=2)


@pytest.mark.parametrize(
    ("given", "stored"),
    [(0, 0.0), (1, 1.0), (0.25, 0.25), (Fraction(1, 4), 0.25), (Decimal("0.5"), 0.5), (Decimal("-2"), 0.0),
     (-0.5, 0.0), (1.0000001, 1.0), (42, 1.0)],
)
def test_fractions_are_clamped_into_zero_to_one(given: float, stored: float) -> None:
    context, seen = recording_context()
    context.progress(given, "x")
    assert seen == [(stored, "x")]


@pytest.mark.parametrize(
    "junk", [float("nan"), float("inf"), -float("inf"), Decimal("NaN"), Decimal("sNaN"), Decimal("1e400"), "0.5", None, True, [0.5], object()],
)
def test_a_fraction_that_is_no_finite_number_is_refused_and_logged_never_raised(junk: object, caplog: pytest.LogCaptureFixture) -> None:
    context, seen = recording_context()
    with caplog.at_level(logging.WARNING, logger="core.tasks"):
        untyped_task_call(context)(junk, "x")
    assert seen == []
    assert "progress ignored" in caplog.text


def test_messages_lose_control_and_format_characters_and_are_cut_to_the_column() -> None:
    assert clean_message("  step\t1\nof 3\x00\x1b[31m  ") == "step 1 of 3  [31m"
    assert clean_message("ok\u202egnp.exe\u200b") == "okgnp.exe", "bidi overrides and zero-width characters are dropped"
    assert clean_message("lone \ud800 surrogate") == "lone  surrogate", "not storable as UTF-8"
    assert clean_message("line\u2028break") == "line break"
    assert clean_message(None) == ""
    assert clean_message(42) == "42"
    assert clean_message("ümlaut 😀") == "ümlaut 😀"
    long = clean_message("x" * 1000)
    assert len(long) == PROGRESS_MESSAGE_LIMIT and long.endswith("…")
    assert clean_progress(0.5) == (0.5, "")


def test_a_message_that_cannot_be_printed_is_ignored() -> None:
    class Unprintable:
        @override
        def __str__(self) -> str:
            raise RuntimeError("no")

    context, seen = recording_context()
    untyped_task_call(context)(0.5, Unprintable())
    assert seen == []


def test_a_failing_reporter_never_fails_the_task(caplog: pytest.LogCaptureFixture) -> None:
    def broken(fraction: float, message: str) -> None:
        raise RuntimeError("database gone")

    context = RunContext(slot=SLOT, trigger="schedule", attempt=1, reporter=broken)
    with caplog.at_level(logging.WARNING, logger="core.tasks"):
        context.progress(0.5, "x")
    assert "progress not recorded" in caplog.text


@pytest.mark.parametrize("huge", [10**400, -(10**400), Fraction(10**400, 3)], ids=["int", "negative int", "Fraction"])
def test_a_number_beyond_float_range_is_logged_as_out_of_range(huge: object, caplog: pytest.LogCaptureFixture) -> None:
    context, seen = recording_context()
    with caplog.at_level(logging.WARNING, logger="core.tasks"):
        untyped_task_call(context)(huge, "x")
    assert seen == []
    assert "out of range" in caplog.text
    assert "not printable" not in caplog.text


def _counting_category(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    category: Callable[[str], str] = unicodedata.category

    def counted(ch: str) -> str:
        calls[0] += 1
        return category(ch)

    monkeypatch.setattr(unicodedata, "category", counted)
    return calls


@pytest.mark.parametrize(
    "text", ["x" * 1_000_000, " " * 1_000_000, "\u200b" * 1_000_000, "a" + " " * 1_000_000 + "b"],
    ids=["letters", "spaces", "zero-width", "spaced ends"],
)
def test_cleaning_a_huge_message_reads_a_bounded_part_of_it(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting_category(monkeypatch)
    cleaned = clean_message(text)
    assert len(cleaned) <= PROGRESS_MESSAGE_LIMIT
    assert calls[0] <= 16 * PROGRESS_MESSAGE_LIMIT, "the work depends on the limit, not on the message"


def _clean_whole_then_cut(text: str) -> str:
    """The rule as it reads: clean every character, strip the ends, cut to the column."""
    kept = "".join(
        " " if unicodedata.category(ch) in {"Cc", "Zl", "Zp"} else ch
        for ch in text
        if unicodedata.category(ch) not in {"Cf", "Cs"}
    ).strip()
    return kept if len(kept) <= PROGRESS_MESSAGE_LIMIT else kept[: PROGRESS_MESSAGE_LIMIT - 1].rstrip() + "…"


@given(st.text(alphabet=st.sampled_from("ab é😀 \t\n\x00\x9b\u202e\u200b\u2028\u3000"), max_size=1200))
def test_cutting_first_gives_what_cleaning_the_whole_message_gave(text: str) -> None:
    assert clean_message(text) == _clean_whole_then_cut(text)
