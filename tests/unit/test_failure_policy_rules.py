"""The input rules of a schedule's failure policy (core.scheduling): retries 0-10, a retry backoff
of 1 s to 24 h given as seconds or 30s/5m/1h, pause-after 1-1000 or off/never (0 refused)."""

from __future__ import annotations

import pytest

from core.scheduling import validate_pause_after, validate_retries, validate_retry_backoff


@pytest.mark.parametrize(("good", "expected"), [(0, 0), (10, 10), ("3", 3), (" 7 ", 7)])
def test_retries(good: object, expected: int) -> None:
    assert validate_retries(good) == expected


@pytest.mark.parametrize("bad", [-1, 11, "11", "", "3.0", "٣", "+3", 2.0, True, None])
def test_bad_retries_name_the_range(bad: object) -> None:
    with pytest.raises(ValueError, match="retries must be a whole number from 0 to 10"):
        validate_retries(bad)


@pytest.mark.parametrize(("good", "expected"), [(1, 1), (86_400, 86_400), ("45", 45), ("30s", 30), ("5m", 300), ("1h", 3600),
                                                 ("24h", 86_400), (" 2 m ", 120)])
def test_retry_backoff(good: object, expected: int) -> None:
    assert validate_retry_backoff(good) == expected


@pytest.mark.parametrize("bad", [0, -5, 86_401, "0s", "25h", "1441m", "2d", "-5s", "1.5m", "5 minutes", "", True, 30.0, None])
def test_bad_retry_backoffs_name_the_range(bad: object) -> None:
    with pytest.raises(ValueError, match="retry backoff must be a duration from 1s to 24h"):
        validate_retry_backoff(bad)


@pytest.mark.parametrize(("good", "expected"), [(1, 1), (1000, 1000), ("5", 5), ("off", 0), ("never", 0), (" OFF ", 0)])
def test_pause_after(good: object, expected: int) -> None:
    assert validate_pause_after(good) == expected


@pytest.mark.parametrize("bad", [0, "0", " 0 "])
def test_a_pause_after_of_zero_is_refused_with_the_word_for_never(bad: object) -> None:
    with pytest.raises(ValueError, match='0 is refused.*|.*"off" to never pause'):
        validate_pause_after(bad)


@pytest.mark.parametrize("bad", [-1, 1001, "sometimes", "", "5.0", True, None])
def test_bad_pause_after_names_the_range(bad: object) -> None:
    with pytest.raises(ValueError, match="from 1 to 1000"):
        validate_pause_after(bad)
