"""Where claimed runs go: onto the RQ queue, or through the executor in this process.

The claim loop (dispatcher.service) is the same for both; a sink says how big a claim may be, the
trigger it records, whether the pass should stop before the next claim, and delivers a batch,
returning the runs it did not deliver (their leases are released by the loop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from core.domain import ClaimedRun, DispatchSummary, Trigger
from core.executor import InlineRuns, Runner, RunResult
from dispatcher.enqueue import RqEnqueuer
from dispatcher.workers import available_capacity

logger = logging.getLogger(__name__)

# Sync mode's first claim of a pass is small, so that runs of minutes do not wait long under a
# lease before a thread is free, and few leases are handed back unrun when the budget runs out.
SYNC_CLAIM_BATCH = 20
# A batch whose runs all started within QUICK_BATCH_SECONDS doubles the next claim, up to
# SYNC_CLAIM_BATCH_MAX: with quick runs, each claim of 20 cost as much as the runs' own writes
# (the claim and the waking of the pass's thread: ~15 % of a no-op run, a probe in docs/performance.md).
SYNC_CLAIM_BATCH_MAX = 500
QUICK_BATCH_SECONDS = 0.5
# How long after RQ marked a job started its lease may still look expired: the worker renews it
# first thing (core.executor's start_run), so this only covers that statement's round trip.
START_GRACE = timedelta(seconds=10)
# Seconds a sync pass waits at a time for a run slot that another pass holds, between budget checks.
SLOT_WAIT_SLICE = 0.2


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

    def end_pass(self, summary: DispatchSummary, *, stopping: bool) -> None:
        """After the last claim: wait for what still runs here (`stopping`: a stop request; end it now)."""

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

    def end_pass(self, summary: DispatchSummary, *, stopping: bool) -> None:
        pass  # the queue's jobs run on the workers

    def capacity(self) -> int | None:
        """The live RQ workers' threads; unknown (None) when Redis fails after a successful pass."""
        return available_capacity(self.enqueuer.queue, sync_threads=0)  # a queue is given: never read


class InlineSink:
    """Run the claimed runs here, up to `threads` (SYNC_THREADS) side by side, through the same
    executor, lease and fencing the workers use, within a time budget.

    A run thread that ends a run goes on to the batch's next itself (core.executor.InlineRuns);
    the pass claims the next batch once the batch has started and a slot is free. Each run gets
    JOB_TIMEOUT, as on a worker: the pass's thread waits for its runs and, past a run's timeout,
    records it failed and goes on; a task that never
    returns keeps its thread, and its late result is refused (`stale`). A run starts only while the
    budget lasts; runs claimed and not started are handed back (`released`, due again at once),
    and the pass ends when its runs have ended. The `threads` slots are shared by every pass of
    the process (the embedded loop and the sync HTTP trigger may run passes at once); a direct run
    (Run now, `dispatch --user`: a person waits for it) takes none and starts at once."""

    mode = "sync"
    trigger = Trigger.SYNC
    parks_expired = False  # an inline run lives in this process only: an expired lease is lost

    def alive(self, parked: Sequence[ClaimedRun], now: datetime) -> set[str]:
        return set()

    def __init__(self, runner: Runner, *, time_budget: float, threads: int = 1, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.runner = runner
        self.time_budget = time_budget
        self.threads = threads
        self.monotonic = monotonic
        self._slots = threading.BoundedSemaphore(threads)
        self._pass = threading.local()  # a pass runs on one thread; passes may run at once

    def begin_pass(self) -> None:
        deadline = self._pass.deadline = self.monotonic() + self.time_budget
        self._pass.batch = max(SYNC_CLAIM_BATCH, self.threads)
        self._pass.runs = InlineRuns(
            self.runner, slots=self._slots, threads=self.threads, may_start=lambda: self.monotonic() < deadline,
        )

    def claim_limit(self) -> int:
        return int(self._pass.batch)

    def must_stop(self, summary: DispatchSummary) -> bool:
        if self.monotonic() < self._pass.deadline:
            return False
        summary.budget_exhausted = True
        return True

    def deliver(self, claimed: Sequence[ClaimedRun], summary: DispatchSummary) -> Sequence[ClaimedRun]:
        runs: InlineRuns = self._pass.runs
        began = self.monotonic()
        try:
            for run in claimed:
                runs.add(run, enqueued_at=run.claimed_at, capped=run.trigger is not Trigger.MANUAL)
            while True:
                if self.must_stop(summary):
                    return runs.take_back()
                # Waits for a slot in short slices when this pass holds none (another pass holds
                # them all), so the budget is checked meanwhile.
                runs.start_chains(wait=SLOT_WAIT_SLICE)
                if runs.fed:  # the next claim's runs have a slot to go to
                    if self.monotonic() - began < QUICK_BATCH_SECONDS:
                        self._pass.batch = min(2 * self._pass.batch, max(SYNC_CLAIM_BATCH_MAX, self.threads))
                    return ()
                self._count(runs.wait(at_most=SLOT_WAIT_SLICE), summary)
        except BaseException:  # a stop request: record the runs going before their leases are released
            runs.stop()
            raise

    def end_pass(self, summary: DispatchSummary, *, stopping: bool) -> None:
        """Wait for the runs still going (each up to JOB_TIMEOUT); `stopping`: record them failed now."""
        runs: InlineRuns | None = getattr(self._pass, "runs", None)
        if runs is None:
            return
        self._pass.runs = None
        if stopping:
            runs.stop()
        else:
            self._count(runs.wait(every=True), summary)

    @staticmethod
    def _count(results: Sequence[RunResult], summary: DispatchSummary) -> None:
        for result in results:
            summary.count_run(result.status)

    def capacity(self) -> int | None:
        """This dispatcher runs its claims itself, `threads` at once."""
        return self.threads
