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


def test_a_runs_retry_waits_double_from_the_base_up_to_an_hour_plus_a_stable_jitter() -> None:
    from core.retry import RetryPolicy

    policy = RetryPolicy(retries=10, backoff_seconds=30, pause_after=0)
    waits = [policy.delay("alice", attempt) for attempt in range(1, 11)]
    for attempt, wait in enumerate(waits, start=1):
        base = min(30 * 2 ** (attempt - 1), 3600)
        assert base <= wait < base * 1.25, (attempt, wait)
    assert waits == [policy.delay("alice", attempt) for attempt in range(1, 11)], "the same wait on every host"
    assert policy.delay("alice", 1) != policy.delay("bob", 1), "users failing together spread out"
    assert RetryPolicy(retries=1, backoff_seconds=86_400, pause_after=0).delay("alice", 5) < 86_400 * 1.25, "a base above the cap is the cap"


def test_a_lost_attempt_is_retried_at_least_once() -> None:
    from core.retry import RetryPolicy

    assert [RetryPolicy(retries, 30, 0).lost_retries for retries in (0, 1, 3)] == [1, 1, 3]
