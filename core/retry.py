"""One retry policy for the loops that wait out an outage: the database writes of a run
(core.executor), a transaction whose connection was gone (core.db.run_transaction) and the worker's
Redis connection (worker.outages). Each names its own `Backoff`; the loops around it decide what
counts as an outage and when to give up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """The waits between attempts: `first` seconds, then each `factor` times the one before, at
    most `cap`; `retries` waits in all (None: as many as the caller wants)."""

    first: float
    factor: float = 2.0
    cap: float | None = None
    retries: int | None = None

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failed attempt (1 = the first)."""
        # The exponent stops growing long after any cap is reached: a float power overflows.
        wait = self.first * self.factor ** min(max(failures - 1, 0), 100)
        return wait if self.cap is None else min(wait, self.cap)

    def delays(self) -> Iterator[float]:
        """The waits in order; it ends after `retries` of them (never when `retries` is None)."""
        failures = 0
        while self.retries is None or failures < self.retries:
            failures += 1
            yield self.delay(failures)
