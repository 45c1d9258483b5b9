"""One backoff policy (`Backoff`) for every wait between attempts, and the retry policy of a
schedule's runs built on it.

`Backoff` serves the loops that wait out an outage (the database writes of a run in
core.executor, a transaction whose connection was gone in core.db.run_transaction, the worker's
Redis connection in worker.outages: each names its own, and decides what counts as an outage and
when to give up) and the retry of a failed run within its slot (`RetryPolicy`, issue 17: the
decision itself is core.outcome's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from core.settings import Settings

RETRY_BACKOFF_CAP_SECONDS = 3600
"""The longest wait before a run's retry (before jitter), unless the base backoff is longer: a
doubling that goes on past an hour is a slot that should be given up (the next slot comes)."""

RETRY_JITTER = 0.25
"""A run's retry waits up to this fraction longer than its backoff, the same fraction for the same
user and attempt on every host (so retries of many users failing together spread out)."""


@dataclass(frozen=True)
class Backoff:
    """The waits between attempts: `first` seconds, then each `factor` times the one before, at
    most `cap`; `retries` waits in all (None: as many as the caller wants). With `jitter`, a wait
    for a `key` is lengthened by up to that fraction, derived from the key and the attempt (stable,
    never random: every host computes the same wait)."""

    first: float
    factor: float = 2.0
    cap: float | None = None
    retries: int | None = None
    jitter: float = 0.0

    def delay(self, failures: int, key: str = "") -> float:
        """The wait after the `failures`-th failed attempt (1 = the first)."""
        # The exponent stops growing long after any cap is reached: a float power overflows.
        wait = self.first * self.factor ** min(max(failures - 1, 0), 100)
        wait = wait if self.cap is None else min(wait, self.cap)
        return wait + wait * self.jitter * stable_fraction(f"{key}:{failures}") if self.jitter else wait

    def delays(self) -> Iterator[float]:
        """The waits in order; it ends after `retries` of them (never when `retries` is None)."""
        failures = 0
        while self.retries is None or failures < self.retries:
            failures += 1
            yield self.delay(failures)


def stable_fraction(key: str) -> float:
    """A number in [0, 1) from `key` alone (SHA-256): the same on every host and every run."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class RetryDefaults:
    """The settings' defaults for a schedule's NULL columns (DEFAULT_RETRIES, RETRY_BACKOFF_SECONDS,
    PAUSE_AFTER_FAILED_SLOTS); these values are the settings' own defaults (no retry, no pause)."""

    retries: int = 0
    backoff_seconds: int = 30
    pause_after: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryDefaults:
        return cls(settings.DEFAULT_RETRIES, settings.RETRY_BACKOFF_SECONDS, settings.PAUSE_AFTER_FAILED_SLOTS)


class _PolicyColumns(Protocol):
    """A schedule's own values (core.domain.Schedule has these; None takes the default)."""

    @property
    def retries(self) -> int | None: ...
    @property
    def retry_backoff_seconds(self) -> int | None: ...
    @property
    def pause_after(self) -> int | None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """What a schedule does when a run fails, with every default filled in.

    - `retries`: attempts after the first within one slot (0-10) for a failed or timed-out run; a
      lost run (its lease expired without a result) gets at least one (`lost_retries`);
    - `backoff_seconds`: the base wait before a retry; the n-th retry waits base * 2^(n-1), at most
      an hour (or the base, if longer), plus a stable per-user jitter of up to 25% (`delay`);
    - `pause_after`: consecutive failed slots after which the schedule pauses (0: never)."""

    retries: int
    backoff_seconds: int
    pause_after: int

    @property
    def backoff(self) -> Backoff:
        return Backoff(first=self.backoff_seconds, factor=2.0, cap=max(self.backoff_seconds, RETRY_BACKOFF_CAP_SECONDS), jitter=RETRY_JITTER)

    @property
    def lost_retries(self) -> int:
        """Retries of a slot whose attempts were lost: at least one, so a worker that died (a
        deploy, the OOM killer) costs no slot even without retries; bounded, so a run that kills
        its worker every time is not run again and again in one slot."""
        return max(self.retries, 1)

    def delay(self, user_id: str, attempt: int) -> float:
        """Seconds to wait before retrying `attempt` (1 = the first attempt failed) of `user_id`."""
        return self.backoff.delay(attempt, key=user_id)


def retry_policy(*, retries: int | None, backoff_seconds: int | None, pause_after: int | None, defaults: RetryDefaults) -> RetryPolicy:
    """The effective policy of a schedule's columns (NULL: the default)."""
    return RetryPolicy(
        defaults.retries if retries is None else retries,
        defaults.backoff_seconds if backoff_seconds is None else backoff_seconds,
        defaults.pause_after if pause_after is None else pause_after,
    )


def effective_retry_policy(schedule: _PolicyColumns, settings: Settings | RetryDefaults) -> RetryPolicy:
    """The retries, backoff and pause threshold a schedule runs with: its own values, or where it
    has none (NULL) the settings' defaults. What `schedule show`, the API and the settings page
    display as the effective values."""
    defaults = settings if isinstance(settings, RetryDefaults) else RetryDefaults.from_settings(settings)
    return retry_policy(retries=schedule.retries, backoff_seconds=schedule.retry_backoff_seconds,
                        pause_after=schedule.pause_after, defaults=defaults)
