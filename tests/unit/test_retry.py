"""core.retry.Backoff: the one policy of the loops that wait out an outage."""

from __future__ import annotations

from itertools import islice

from core.retry import Backoff


def test_the_waits_double_from_the_first_up_to_the_cap() -> None:
    assert list(islice(Backoff(first=0.5, factor=2.0, cap=5.0).delays(), 7)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_the_waits_end_after_the_retries() -> None:
    assert list(Backoff(first=0.0, retries=1).delays()) == [0.0]
    assert list(Backoff(first=1.0, factor=3.0, retries=3).delays()) == [1.0, 3.0, 9.0]


def test_an_outage_of_any_length_gets_a_wait_not_an_overflow() -> None:
    backoff = Backoff(first=0.1, factor=2.0, cap=2.0)
    assert backoff.delay(1) == 0.1
    assert backoff.delay(100_000) == 2.0
