"""Capacity: the concurrency the schedules need against the concurrency the workers offer.

Pure arithmetic on figures the queries read (no I/O, no clock). Also the name of the field a
worker process sets in its RQ worker hash to announce its threads, shared by the worker (which
writes it) and the dispatcher (which adds the fields up).

The sizing rule (docs/operations.md): a user whose run takes d seconds every i seconds keeps a
worker busy d / i of the time, so the runs needed at once are the sum of d / i over enabled users
(50 users × 240 s ÷ 300 s = 40).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

# Runs one worker process executes at once (its --threads); absent means 1 (a plain RQ worker).
WORKER_THREADS_FIELD = "monitor_threads"


@dataclass(frozen=True)
class RunCounts:
    """Schedules by where their run is: due (waiting for a pass), queued (leased, job not started),
    running (leased, started by a worker)."""

    due: int = 0
    queued: int = 0
    running: int = 0

    @property
    def backlog(self) -> int:
        """Runs waiting for a worker: due plus queued."""
        return self.due + self.queued


@dataclass(frozen=True)
class IntervalLoad:
    """The enabled users of one interval: how many, how many have a recent average run time,
    and the sum of those averages in seconds. A calendar schedule counts at its average interval
    over a week (core.calendar.average_interval_minutes: "0 9 * * MON-FRI" is 2016 minutes)."""

    interval_minutes: float
    users: int
    timed_users: int
    timed_seconds: float


def demand(loads: Iterable[IntervalLoad], default_seconds: float) -> float:
    """Runs needed at once: Σ over users of (average run seconds ÷ interval seconds), a user
    without recent runs counted at `default_seconds`. Users of one interval share the divisor, so
    each interval adds (Σ of its users' averages) ÷ its seconds."""
    total = 0.0
    for load in loads:
        untimed = load.users - load.timed_users
        total += (load.timed_seconds + untimed * default_seconds) / (load.interval_minutes * 60)
    return total


def expected_wait_seconds(backlog: int, average_run_seconds: float, capacity: int | None) -> float | None:
    """How long a run joining the backlog now waits, roughly: the backlog's work shared by the
    capacity. None when the capacity is unknown or zero (no worker: the wait has no end)."""
    if not capacity:
        return None
    return backlog * average_run_seconds / capacity


def is_overloaded(demand: float, capacity: int | None) -> bool:
    """Demand above capacity; an unknown capacity is never called overloaded."""
    return capacity is not None and demand > capacity


@dataclass(frozen=True)
class Sample:
    """One SchedulerSample row: the figures at the end of one dispatch pass."""

    at: datetime
    due: int
    queued: int
    running: int
    demand: float
    capacity: int | None

    @property
    def overloaded(self) -> bool:
        return is_overloaded(self.demand, self.capacity)


@dataclass(frozen=True)
class Load:
    """What the schedules ask for at one moment: the counts, the demand and the average run time."""

    counts: RunCounts
    demand: float
    average_run_seconds: float


@dataclass(frozen=True)
class CapacityReport:
    """Needed against available, what waits, and since when demand has been above capacity."""

    now: datetime
    load: Load
    capacity: int | None
    overloaded_since: datetime | None  # the first sample of the current overload, from the samples

    @property
    def needed(self) -> float:
        return self.load.demand

    @property
    def backlog(self) -> int:
        return self.load.counts.backlog

    @property
    def expected_wait_seconds(self) -> float | None:
        return expected_wait_seconds(self.backlog, self.load.average_run_seconds, self.capacity)

    @property
    def overloaded(self) -> bool:
        return is_overloaded(self.load.demand, self.capacity)

    @property
    def overloaded_seconds(self) -> float | None:
        return None if self.overloaded_since is None else max(0.0, (self.now - self.overloaded_since).total_seconds())

    def sample(self) -> Sample:
        """The SchedulerSample row of these figures (what a dispatch pass writes at its end)."""
        counts = self.load.counts
        return Sample(at=self.now, due=counts.due, queued=counts.queued, running=counts.running, demand=self.load.demand, capacity=self.capacity)
