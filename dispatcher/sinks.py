"""Where claimed runs go: onto the RQ queue, or through the executor in this process.

The claim loop (dispatcher.service) is the same for both; a sink says how big a claim may be, the
trigger it records, whether the pass should stop before the next claim, and delivers a batch,
returning the runs it did not deliver (their leases are released by the loop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from core.capacity import SYNC_CAPACITY
from core.domain import ClaimedRun, DispatchSummary, Trigger
from core.executor import Runner
from dispatcher.enqueue import RqEnqueuer
from dispatcher.workers import available_capacity

logger = logging.getLogger(__name__)

# Sync mode claims small batches so that, when the time budget runs out, few leases are handed
# back unrun and none wait for their TTL.
SYNC_CLAIM_BATCH = 20
# How long after RQ marked a job started its lease may still look expired: the worker renews it
# first thing (core.executor's start_run), so this only covers that statement's round trip.
START_GRACE = timedelta(seconds=10)


class Sink(Protocol):
    mode: str
    trigger: Trigger
    parks_expired: bool  # expired leases are checked against the queue before a takeover

    def alive(self, parked: Sequence[ClaimedRun], now: datetime) -> set[str]:
        """The users among `parked` whose run still lives downstream (waits in the queue)."""

    def begin_pass(self) -> None:
        """Fail fast before anything is claimed (the queue answers?)."""

    def claim_limit(self) -> int:
        """How many rows one claim transaction may take."""

    def must_stop(self, summary: DispatchSummary) -> bool:
        """True to end the pass before the next claim (back-pressure, time budget)."""

    def deliver(self, claimed: Sequence[ClaimedRun], summary: DispatchSummary) -> Sequence[ClaimedRun]:
        """Hand the runs on; return those not handed on. Raise QueueUnavailable if none could be."""

    def capacity(self) -> int | None:
        """Runs that can execute at once downstream (None: unknown), for the pass's sample."""


class QueueSink:
    """Enqueue each claimed batch as RQ jobs in one round trip; stop at QUEUE_MAX_DEPTH."""

    mode = "queue"
    trigger = Trigger.SCHEDULE
    parks_expired = True

    def __init__(self, enqueuer: RqEnqueuer, *, chunk_size: int, max_depth: int, start_grace: timedelta = START_GRACE) -> None:
        self.enqueuer = enqueuer
        self.chunk_size = chunk_size
        self.max_depth = max_depth
        self.start_grace = start_grace
        self._depth = 0

    def alive(self, parked: Sequence[ClaimedRun], now: datetime) -> set[str]:
        return self.enqueuer.waiting_or_starting(parked, now=now, start_grace=self.start_grace)

    def begin_pass(self) -> None:
        self._depth = self.enqueuer.depth()  # before anything is claimed: fails fast when Redis is down

    def claim_limit(self) -> int:
        return self.chunk_size

    def must_stop(self, summary: DispatchSummary) -> bool:
        if self._depth < self.max_depth:
            return False
        summary.backpressure = True  # the claim loop counts the users left waiting
        logger.warning("queue holds %s jobs (QUEUE_MAX_DEPTH=%s): not enqueueing", self._depth, self.max_depth)
        return True

    def deliver(self, claimed: Sequence[ClaimedRun], summary: DispatchSummary) -> Sequence[ClaimedRun]:
        self._depth = self.enqueuer.enqueue(claimed)
        summary.enqueued += len(claimed)
        return ()

    def capacity(self) -> int | None:
        """The live RQ workers' threads; unknown (None) when Redis fails after a successful pass."""
        return available_capacity(self.enqueuer.queue)


class InlineSink:
    """Run each claimed run here, through the same executor the workers use, within a time budget.

    Each run gets JOB_TIMEOUT, as on a worker: the executor runs the task on one of its run threads
    and, past the timeout, records the run failed and hands the pass back (`Runner.execute_within`);
    a task that never returns keeps its thread, and its late result is refused (`stale`)."""

    mode = "sync"
    trigger = Trigger.SYNC
    parks_expired = False  # an inline run lives in this process only: an expired lease is lost

    def alive(self, parked: Sequence[ClaimedRun], now: datetime) -> set[str]:
        return set()

    def __init__(self, runner: Runner, *, time_budget: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.runner = runner
        self.time_budget = time_budget
        self.monotonic = monotonic
        self._deadline = 0.0

    def begin_pass(self) -> None:
        self._deadline = self.monotonic() + self.time_budget

    def claim_limit(self) -> int:
        return SYNC_CLAIM_BATCH

    def must_stop(self, summary: DispatchSummary) -> bool:
        if self.monotonic() < self._deadline:
            return False
        summary.budget_exhausted = True
        return True

    def deliver(self, claimed: Sequence[ClaimedRun], summary: DispatchSummary) -> Sequence[ClaimedRun]:
        for index, run in enumerate(claimed):
            if self.must_stop(summary):
                return claimed[index:]
            summary.count_run(self.runner.execute_within(run, enqueued_at=run.claimed_at).status)
        return ()

    def capacity(self) -> int | None:
        """This dispatcher runs its claims itself, one at a time."""
        return SYNC_CAPACITY
