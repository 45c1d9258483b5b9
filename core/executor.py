"""Executes one claimed run: the same code for RQ workers, sync mode and direct mode.

1. Check the lease is still ours (a fenced renew from "now"). If not, record a skipped run and stop.
2. Run the task while the process's lease keeper renews the lease every third of its length, so a
   run longer than DISPATCH_LOCK_TTL keeps it; if the process dies, the keeper dies with it and the
   lease runs out, so the user is due again within one TTL.
3. In one transaction: lock the row if still ours (reading its rule and retry columns), decide
   the slot's fate (core.outcome.settle: the next slot, or a retry of this one at now + backoff,
   the count of failed slots, the pause), write it with the outcome and the release in one write
   fenced on `lockedBy = token`, and insert the history row (with the task's result: core.tasks.
   encode_result; a dropped retry and a pause add a row each). If the lease was lost, the result is
   recorded in history as `stale` and nothing on the schedule is overwritten: a stale worker's late
   result cannot cancel (or duplicate) the retry another worker owns.

A short database outage (a restart) loses no finished run: the finishing write is retried with
capped backoff for as long as the lease, as last renewed, still holds, while the lease keeper
goes on renewing it (its renewals fail while the database is down and succeed again after). Only a
lease really gone refuses the result (`stale`); only a lease run out while the database stayed
down gives up (the error is raised, and the run is recorded `lost` and run again by a later pass).
The check at the start is retried the same way within one lease length.

A run has one deadline, JOB_TIMEOUT, in every mode, and one arbiter of "did the task return, or
did the timeout come first": this Runner (`_InProgress.ended`, claimed once under one lock).
- Sync mode (`InlineRuns`): each task runs on one of the runner's
  run threads (core.run_threads; reused, none started per run), up to SYNC_THREADS side by side,
  each thread going on to the pass's next claimed run by itself, while the pass's thread waits,
  each run up to JOB_TIMEOUT; past it, the pass's thread claims the timeout and records the run
  failed through the fenced finish (the lease is released, the user moves on) and the pass goes on.
- The threaded worker: its watchdog claims the timeout (`claim_timeout`, no database) and hands
  the recording (`record_timeout`) to another thread, so one slow write blocks no other timeout.
- The default worker: RQ's SIGALRM raises `RunTimedOut` into the task (worker.timeouts); the
  run's own thread records it failed and re-raises, and RQ fails the job.
A thread cannot be killed: a sync task that never returns keeps its thread; when it returns, its
late result finds the lease gone and is recorded `stale`. An async task is cancelled at the
timeout (it runs on the process's event loop, where it can be).
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from sqlalchemy import Connection, Engine

from core import fenced, queries, shutdown
from core.clock import Clock, clock_for_dialect, to_ms_precision
from core.db import is_outage, run_transaction
from core.domain import ClaimedRun, RunRecord, RunStatus
from core.event_loop import EventLoopThread
from core.exceptions import PermanentError, RunTimedOut, TaskExited
from core.logs import run_fields
from core.progress import ProgressPolicy, Report, RunProgress
from core.outcome import SlotOutcome, dropped_record, paused_record, settle
from core.retry import Backoff, RetryDefaults, effective_retry_policy
from core.run_threads import RunThreads
from core.settings import Settings
from core.tasks import RunContext, Task, encode_result, load_task
from core.text import clean_error
from core.writes import insert_runs

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Backoff between attempts of a run's database write during an outage: doubling, capped so that a
# restarted server is noticed within a couple of seconds; no count (the lease's time bounds it).
RETRY_BACKOFF = Backoff(first=0.1, factor=2.0, cap=2.0)


@dataclass(frozen=True)
class RunResult:
    user_id: str
    status: RunStatus
    error: str | None = None
    skipped_slots: int = 0
    applied: bool = True  # False when the lease was lost and the schedule was left alone
    retrying: bool = False  # the run failed and its slot is retried (core.outcome)


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_here = threading.local()  # what this thread does for a run: read by a signal handler, so no lock


def finishing_here() -> bool:
    """True while this thread writes the outcome of a run whose task has returned: a timeout that
    arrives now (RQ's SIGALRM, worker.timeouts) must not interrupt the write; the run is over."""
    return bool(getattr(_here, "finishing", False))


SIGNAL_CHECK_PERIOD = 0.2
"""Seconds a waiting main thread sleeps at most between checks for a signal: a signal the kernel
delivers to another thread (a run thread) does not wake a lock wait, so Ctrl-C would wait for the
run (CPython runs signal handlers in the main thread, between its own waits)."""


@dataclass(eq=False)
class _InProgress:
    """A run whose task is running: who ended it (the task's return or its timeout, first claim
    wins) and, for an async task, the future to cancel at the timeout."""

    ended: Literal["returned", "timed out"] | None = None
    future: Future[object] | None = None
    timeout_recorded: threading.Event | None = None  # set once the timeout's failure is written


GROW_AFTER = 0.005
"""Seconds a sync pass's backlog may stand still (no run taken from it while its chains run)
before the pass doubles its chains (`Widening`)."""

GROW_CHECK_MAX = 0.08
"""The longest the pass's thread sleeps between looks at a moving backlog: each look that finds it
moving doubles the next sleep, from GROW_AFTER up to this. The pass's thread waking every few
milliseconds beside a busy run thread cost ~12 % of a no-op run (it takes the GIL from it;
docs/performance.md)."""

GROW_RETRY = 0.1
"""Seconds before a pass looks again for a free slot that another pass of the process held."""


class Widening:
    """How many chains a sync pass wants (its width): one at first, doubled (up to `most`, its
    SYNC_THREADS) each time its backlog has stood still for GROW_AFTER while its chains ran.

    Why not every thread at once: runs that wait (an HTTP check, a sleep) stand the backlog still
    at once and get every thread within a few GROW_AFTER, but runs quicker than that gain nothing
    from more threads and lose to their contention: on SQLite, four threads of no-op runs
    collide on the one write lock, whose busy handler sleeps a millisecond or more per collision
    (benchmark 6, docs/performance.md). A pass's width never shrinks; a new pass starts at one.

    Times are monotonic seconds passed in, so the rule is tested without threads; the pass's
    thread calls `look` when `look_at` comes (InlineRuns.wait wakes for it)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.width = 1
        self.look_at = 0.0  # when the pass's thread looks next (or seeks a missing slot again)
        self._moved = 0.0  # when the backlog last moved: a run taken from it, or a first one added
        self._every = GROW_AFTER

    def moved(self, now: float) -> None:
        self._moved = now

    def begin(self, now: float) -> None:
        """Chains start from none (a pass's first batch, or the next at width 1): the next look
        is at least GROW_AFTER away, and no sooner than the looks so far have come to (a pass of
        quick runs does not start looking often again at each batch)."""
        self.look_at = max(self.look_at, now + GROW_AFTER)

    def look(self, now: float) -> None:
        """Double the width if the backlog stood still for GROW_AFTER (and look again GROW_AFTER
        later); else look again twice as late as last time, up to GROW_CHECK_MAX."""
        if now - self._moved >= GROW_AFTER and self.width < self.most:
            self.width = min(2 * self.width, self.most)
            self._every = GROW_AFTER
        else:
            self._every = min(2 * self._every, GROW_CHECK_MAX)
        self.look_at = now + self._every

    def seek_slot_later(self, now: float) -> None:
        """Other passes held the slots this width wants: look again in GROW_RETRY."""
        self.look_at = now + GROW_RETRY


class _Handoff:
    """A run handed to a run thread and its outcome (a lock is the cheapest wait: ~8 µs a run
    against ~18 µs for a concurrent.futures.Future)."""

    __slots__ = ("run", "enqueued_at", "began", "capped", "done", "result", "error")

    def __init__(self, run: ClaimedRun, enqueued_at: datetime | None, *, capped: bool) -> None:
        self.run, self.enqueued_at, self.capped = run, enqueued_at, capped
        self.began = time.monotonic()
        self.done = threading.Lock()
        self.done.acquire()  # released by the run thread when the outcome is in
        self.result: RunResult | None = None
        self.error: BaseException | None = None

    def outcome(self) -> RunResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class InlineRuns:
    """The runs of one sync pass, on the runner's run threads, each held to JOB_TIMEOUT by the
    pass's thread, side by side up to the free `slots` (SYNC_THREADS, shared by every pass of the
    process: dispatcher.sinks.InlineSink).

    The pass adds its claimed runs (`add`) to a backlog, in claim order. A run thread holding a
    slot (a chain, `start_chains`) runs one, then takes the next from the backlog itself while
    `may_start` (the pass's time budget) allows, and gives its slot back when none is left. The
    pass starts one chain and adds more as the backlog stands still (`Widening`), so quick runs
    stay on one thread and waiting ones soon fill every slot. So a
    run costs no hand-over between threads: handing each run to a sleeping run thread and its
    outcome back to the sleeping pass's thread cost more than the no-op run itself (two wake-ups of
    a thread on the other CPU per run; docs/performance.md). The pass's thread sleeps meanwhile and
    wakes for a chain's end, the backlog's end or its standing still, the next run's JOB_TIMEOUT
    and its own slices.

    The pass's thread is the one arbiter's caller for the runs past their deadline: their timeout
    is claimed and recorded failed here (`Runner.claim_timeout`/`record_timeout`), their slot goes
    back (a new chain takes on the backlog), and the task keeps its thread until it returns (its
    late result is refused, and its chain ends). A stop request (Ctrl-C) while waiting empties the
    backlog and records every run still going failed ("stopped"), then is raised. A run not
    `capped` takes no slot and no backlog run after it (a direct run a person waits for: see
    InlineSink)."""

    def __init__(
        self, runner: Runner, *, slots: threading.Semaphore | None = None, threads: int = 1, timeout: float | None = None,
        may_start: Callable[[], bool] = lambda: True,
    ) -> None:
        self._runner = runner
        self._slots = slots
        self._timeout = runner.settings.JOB_TIMEOUT if timeout is None else timeout
        self._may_start = may_start
        self._changed = threading.Condition(threading.Lock())  # guards everything below
        self._backlog: deque[tuple[ClaimedRun, datetime | None]] = deque()
        self._flights: dict[_Handoff, None] = {}  # going, in start order
        self._done: list[_Handoff] = []  # ended, outcome not yet handed to the pass
        self._chains = 0  # run threads of this pass holding a slot
        self._widening = Widening(threads)  # how many chains this pass wants

    @property
    def fed(self) -> bool:
        """Every backlog run has started, and the pass has room (fewer chains than its width) for
        the next claim's runs. At width 1 the next claim waits for the run to end: a claim while a
        run writes makes SQLite's busy handler sleep, and the backlog look as if it stood still."""
        with self._changed:
            return self._fed_locked()

    def _fed_locked(self) -> bool:
        return not self._backlog and self._chains < self._widening.width

    def add(self, run: ClaimedRun, *, enqueued_at: datetime | None = None, capped: bool = True) -> None:
        """Queue `run` for the chains; one not `capped` starts at once, on a thread of its own."""
        if capped and self._slots is not None:
            with self._changed:
                if not self._backlog:  # a new head: it waits from now
                    self._widening.moved(time.monotonic())
                self._backlog.append((run, enqueued_at))
            return
        handoff = _Handoff(run, enqueued_at, capped=False)
        with self._changed:
            self._flights[handoff] = None
        self._runner.run_threads.submit(self._chain, handoff)

    def start_chains(self, *, wait: float = 0.0) -> None:
        """Chains for the backlog up to the pass's width (`Widening`: it doubles, up to `threads`,
        each time the backlog has stood still for GROW_AFTER while chains ran); when this pass
        holds no slot (other passes hold them all), wait up to `wait` seconds for one."""
        with self._changed:
            if not self._backlog:
                return
            now = time.monotonic()
            if not self._chains:
                self._widening.begin(now)
            elif now >= self._widening.look_at:
                self._widening.look(now)
            wanted = self._widening.width - self._chains
            blocking = self._chains == 0 and wait > 0
        assert self._slots is not None  # a backlog exists only with slots (add)
        for _ in range(wanted):
            if not (self._slots.acquire(timeout=wait) if blocking else self._slots.acquire(blocking=False)):
                with self._changed:  # other passes hold the slots
                    self._widening.seek_slot_later(time.monotonic())
                return
            blocking = False
            with self._changed:
                first = self._next_locked()
                if first is None:  # the backlog went meanwhile (budget, stop, other chains)
                    self._slots.release()
                    return
                self._chains += 1
            self._runner.run_threads.submit(self._chain, first)

    def take_back(self) -> list[ClaimedRun]:
        """The backlog runs not started (the budget ran out): no chain starts them any more."""
        with self._changed:
            runs = [run for run, _ in self._backlog]
            self._backlog.clear()
        return runs

    def wait(self, *, every: bool = False, at_most: float | None = None) -> list[RunResult]:
        """The outcomes of the runs that ended, after waiting (at most `at_most` seconds) until the
        pass has something to do: `fed`, a backlog with no chain left to run it, a look at the
        backlog due (`Widening.look_at`: more chains may start), a run timed out (its slot is free);
        with `every`, until every run has ended. Runs past JOB_TIMEOUT are timed out meanwhile."""
        results: list[RunResult] = []
        give_up = None if at_most is None else time.monotonic() + at_most
        try:
            while True:
                now = time.monotonic()
                with self._changed:
                    overdue = [h for h in self._flights if now - h.began >= self._timeout]
                for handoff in overdue:
                    results.append(self._time_out(handoff, now))
                with self._changed:  # checked and slept on under one lock: no wake-up is missed
                    if not self._flights:
                        break
                    growing = not every and bool(self._backlog) and self._chains < self._widening.most  # may widen, or seek a slot
                    if not every and (overdue or self._fed_locked() or (self._backlog and not self._chains)):
                        break
                    if (give_up is not None and now >= give_up) or (growing and now >= self._widening.look_at):
                        break
                    left = min(h.began for h in self._flights) + self._timeout - now
                    if give_up is not None:
                        left = min(left, give_up - now)
                    if growing:
                        left = min(left, self._widening.look_at - now)
                    # In slices, so that the main thread sees Ctrl-C meanwhile (SIGNAL_CHECK_PERIOD).
                    self._changed.wait(max(0.0, min(left, SIGNAL_CHECK_PERIOD)))
            results.extend(self._collect())
        except BaseException:
            self.stop()
            raise
        return results

    def stop(self, error: str = "stopped: the process was asked to stop") -> None:
        """Empty the backlog and record every run still going failed with `error` (those whose
        task returned meanwhile keep their own outcome); their slots are freed."""
        with self._changed:
            self._backlog.clear()
            going = list(self._flights)
            for handoff in going:
                self._end_locked(handoff)
        for handoff in going:
            if self._runner.claim_timeout(handoff.run):
                self._runner.record_timeout(handoff.run, elapsed=time.monotonic() - handoff.began, enqueued_at=handoff.enqueued_at, error=error)

    def _chain(self, handoff: _Handoff | None) -> None:
        """A run thread's share of the pass: runs, then the backlog's next, until none is left."""
        while handoff is not None:
            self._runner._execute_handed(handoff)
            handoff = self._after(handoff)

    def _after(self, ended: _Handoff) -> _Handoff | None:
        """Hand `ended`'s outcome to the pass and take the backlog's next run, if this chain still
        holds its slot and the budget allows; else give the slot back and wake the pass."""
        with self._changed:
            if ended not in self._flights:  # timed out or stopped meanwhile: its slot went with it
                return None
            del self._flights[ended]
            self._done.append(ended)
            # A run that raised (a stop request, an error the executor could not record) ends the
            # chain: the pass raises it and stops the rest; so does a stop request noted meanwhile.
            going_on = ended.capped and ended.error is None and not shutdown.requested()
            following = self._next_locked() if going_on else None
            if following is not None:
                if not self._backlog:
                    self._changed.notify_all()  # the pass may claim again
                return following
            if ended.capped:
                self._chains -= 1
                assert self._slots is not None
                self._slots.release()
            self._changed.notify_all()
            return None

    def _next_locked(self) -> _Handoff | None:
        if not self._backlog or not self._may_start():
            return None
        run, enqueued_at = self._backlog.popleft()
        handoff = _Handoff(run, enqueued_at, capped=True)
        self._widening.moved(handoff.began)
        self._flights[handoff] = None
        return handoff

    def _collect(self) -> list[RunResult]:
        with self._changed:
            done, self._done = self._done, []
        return [handoff.outcome() for handoff in done]

    def _time_out(self, handoff: _Handoff, now: float) -> RunResult:
        with self._changed:
            returned = handoff not in self._flights  # its task returned just now, and its chain went on
            if not returned:
                self._end_locked(handoff)
        if returned:
            return self._wait_for(handoff)
        if self._runner.claim_timeout(handoff.run):
            return self._runner.record_timeout(handoff.run, elapsed=now - handoff.began, enqueued_at=handoff.enqueued_at)
        return self._wait_for(handoff)  # its task returned (or had not started) first: its own outcome, being written

    def _wait_for(self, handoff: _Handoff) -> RunResult:
        handoff.done.acquire()
        with self._changed:
            if handoff in self._done:
                self._done.remove(handoff)
        return handoff.outcome()

    def _end_locked(self, handoff: _Handoff) -> None:
        del self._flights[handoff]
        if handoff.capped and self._slots is not None:
            self._chains -= 1
            self._slots.release()


class LeaseKeeper:
    """One background thread per process renews the leases of the runs in progress.

    A thread per run cost ~16% of a short run (starting a thread waits for it to be scheduled;
    scripts/bench/profile_sync_path.py, docs/performance.md); a
    long-lived keeper costs a dict insert and delete. Each tick (every third of the lease) renews
    every run held longer than half a period, fenced on its token; a run whose renewal finds the
    lease gone is marked lost and no longer renewed. The thread is started lazily and again after
    a fork (RQ's fork-per-job worker), since threads do not survive fork.

    It also knows, from the last renewal that succeeded, how long the lease still holds
    (`seconds_left`): the executor retries a finishing write for that long.
    """

    def __init__(self, engine: Engine, clock: Clock, lease_ms: int, period: float) -> None:
        self._engine, self._clock, self._lease_ms, self._period = engine, clock, lease_ms, period
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], tuple[ClaimedRun, float]] = {}
        self._lost: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def hold(self, run: ClaimedRun) -> Iterator[None]:
        key = (run.user_id, run.token)
        with self._lock:
            self._held[key] = (run, time.monotonic())
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(key, None)
                self._lost.discard(key)

    def seconds_left(self, run: ClaimedRun) -> float:
        """Seconds until the lease as last renewed runs out (from before that renewal was sent, so
        never later than the database's lockedUntil); 0 once the keeper saw the lease lost."""
        key = (run.user_id, run.token)
        with self._lock:
            held = self._held.get(key)
            if held is None or key in self._lost:
                return 0.0
            renewed_at = held[1]
        return max(0.0, renewed_at + self._lease_ms / 1000 - time.monotonic())

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(self._period)
            now = time.monotonic()
            with self._lock:
                due = [(key, run) for key, (run, since) in self._held.items() if now - since >= self._period / 2 and key not in self._lost]
            for key, run in due:
                self._renew(key, run)

    def _renew(self, key: tuple[str, str], run: ClaimedRun) -> None:
        sent_at = time.monotonic()
        try:
            with self._engine.begin() as conn:
                held = fenced.renew_lease(conn, user_id=run.user_id, token=run.token, lease_until=self._clock.sql_now(self._lease_ms))
        except Exception as exc:  # a failed renewal is retried next period; the lease may still hold
            if is_outage(exc):  # expected while the database restarts: one line, no traceback
                logger.warning("lease renewal failed user=%s token=%s: %s", run.user_id, run.token, exc, extra=run_fields(run))
            else:
                logger.warning("lease renewal failed user=%s token=%s", run.user_id, run.token, exc_info=True, extra=run_fields(run))
            return
        with self._lock:
            if key not in self._held:
                return
            if held:
                self._held[key] = (run, sent_at)
            else:
                self._lost.add(key)
                logger.warning("lease lost while running user=%s token=%s", run.user_id, run.token, extra=run_fields(run))


class Runner:
    def __init__(
        self, engine: Engine, settings: Settings, clock: Clock, task: Task, worker_name: str | None = None,
        progress_policy: ProgressPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.task = task
        self.worker_name = worker_name or default_worker_name()
        self.progress_policy = progress_policy or ProgressPolicy()
        self.retry_defaults = RetryDefaults.from_settings(settings)
        self.lease_keeper = LeaseKeeper(engine, clock, settings.DISPATCH_LOCK_TTL, settings.heartbeat_seconds)
        self.task_loop = EventLoopThread(stall_warning=settings.TASK_LOOP_STALL_WARNING)  # async tasks: one event loop per process
        self.run_threads = RunThreads("run")  # sync mode: the tasks' threads, so that the pass can time them out
        self.progress_writer = RunThreads("progress-writer", limit=1)  # async tasks' progress, off the event loop
        self._end_lock = threading.Lock()
        self._in_progress: dict[tuple[str, str], _InProgress] = {}

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, clock: Clock | None = None) -> Runner:
        """The one place a Runner is assembled: MONITOR_TASK is imported (and built) here."""
        return cls(engine, settings, clock or clock_for_dialect(engine.dialect.name), load_task(settings.MONITOR_TASK, settings))

    def _execute_handed(self, handoff: _Handoff) -> None:
        try:
            handoff.result = self.execute(handoff.run, enqueued_at=handoff.enqueued_at)
        except BaseException as exc:  # handed to the waiting thread (a real stop request included)
            handoff.error = exc
        finally:
            handoff.done.release()

    def execute(self, run: ClaimedRun, *, enqueued_at: datetime | None = None) -> RunResult:
        """Run the task on this thread and record its outcome (the module docstring)."""
        if not self._lease_still_ours(run):
            return self._record_skipped(run, enqueued_at)
        began = time.perf_counter()
        progress = RunProgress(  # one per run: thread-safe
            self.engine, self.clock, run, self.progress_policy, writer=self.progress_writer, on_loop=self.task_loop.in_loop_thread,
        )
        key = (run.user_id, run.token)
        state = _InProgress()
        with self._end_lock:
            self._in_progress[key] = state
        try:
            with self.lease_keeper.hold(run):  # held through the finishing write and its retries
                status, error, reraise, ended = self._call_task(run, state, began, progress)
                with self._end_lock:
                    timed_out = state.ended is not None
                    state.ended = state.ended or "returned"
                if state.timeout_recorded is not None:  # let the timeout's failure land first: the late result is then refused
                    state.timeout_recorded.wait(self.settings.DISPATCH_LOCK_TTL / 1000)  # its write retries no longer
                result = self._finish_riding_out(run, status, error, time.perf_counter() - began, enqueued_at, progress.close(), ended)
        finally:
            _here.finishing = False
            with self._end_lock:
                self._in_progress.pop(key, None)
        if timed_out:
            logger.warning(
                "late result after timeout user=%s slot=%s token=%s status=%s recorded=%s", run.user_id, run.slot, run.token,
                status.value, result.status.value, extra=run_fields(run),
            )
        if reraise is not None:
            raise reraise
        return result

    def claim_timeout(self, run: ClaimedRun) -> bool:
        """Decide, without touching the database, that `run` timed out: True if its task was still
        running (an async task is cancelled now; the caller then records the failure with
        `record_timeout`), False if it returned first or has not started (its own outcome is
        written). Cheap and safe from any thread: the threaded worker's watchdog calls it."""
        with self._end_lock:
            state = self._in_progress.get((run.user_id, run.token))
            if state is None or state.ended is not None:
                return False
            state.ended = "timed out"
            state.timeout_recorded = threading.Event()
            future = state.future
        if future is not None:  # an async task can be stopped: cancelled at its next await
            future.cancel()
        return True

    def record_timeout(
        self, run: ClaimedRun, *, elapsed: float, enqueued_at: datetime | None = None, error: str | None = None,
    ) -> RunResult:
        """Record a run whose timeout was claimed (`claim_timeout`) as failed, releasing its lease;
        retried through a database outage while the lease holds (so: not on a thread that others
        wait for). The task's late result, if it ever comes, is written after this and refused."""
        if error is None:
            logger.error("run timed out user=%s slot=%s token=%s after %.1f s", run.user_id, run.slot, run.token, elapsed, extra=run_fields(run))
        else:
            logger.warning("run ended unfinished user=%s slot=%s token=%s after %.1f s: %s", run.user_id, run.slot, run.token, elapsed, error, extra=run_fields(run))
        text = error or self.timeout_text(elapsed)
        with self._end_lock:
            state = self._in_progress.get((run.user_id, run.token))
        try:
            return self._finish_riding_out(run, RunStatus.FAILED, text, elapsed, enqueued_at)
        finally:
            if state is not None and state.timeout_recorded is not None:
                state.timeout_recorded.set()

    def time_out(self, run: ClaimedRun, *, elapsed: float, enqueued_at: datetime | None = None) -> RunResult | None:
        """`claim_timeout`, then `record_timeout` on this thread; None if the task was not running."""
        if not self.claim_timeout(run):
            return None
        return self.record_timeout(run, elapsed=elapsed, enqueued_at=enqueued_at)

    def timeout_text(self, elapsed: float) -> str:
        return f"timed out after {elapsed:.0f} s (JOB_TIMEOUT {self.settings.JOB_TIMEOUT} s); its late result is refused"

    def _lease_still_ours(self, run: ClaimedRun) -> bool:
        """Start the run: renew the lease from now (the queue wait may have used much of it) and
        note the start, fenced on the token: one statement, "now" computed by the clock inside it.
        Retried through an outage for one lease length: the statement is idempotent (it sets
        lockedUntil and runStartedAt from now, fenced on the token), and until it succeeds nothing
        has run."""
        deadline = time.monotonic() + self.settings.DISPATCH_LOCK_TTL / 1000

        def renew(conn: Connection) -> bool:
            return fenced.start_run(
                conn, user_id=run.user_id, token=run.token,
                lease_until=self.clock.sql_now(self.settings.DISPATCH_LOCK_TTL), now=self.clock.sql_now(),
            )

        return self._retrying(run, "the lease check", lambda: run_transaction(self.engine, renew, what="the lease check"),
                              lambda: deadline - time.monotonic())

    def _retrying(self, run: ClaimedRun, what: str, attempt: Callable[[], T], seconds_left: Callable[[], float]) -> T:
        """`attempt()`, again after a database outage error with capped backoff while
        `seconds_left()` is positive; then the error is raised (logged at ERROR)."""
        delays = RETRY_BACKOFF.delays()
        failures = 0
        while True:
            try:
                result = attempt()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                failures += 1
                left = seconds_left()
                if left <= 0:
                    logger.error("%s failed %s times, lease no longer held: giving up user=%s slot=%s token=%s",
                                 what, failures, run.user_id, run.slot, run.token, exc_info=True, extra=run_fields(run))
                    raise
                if failures == 1:
                    logger.info("%s failed, retrying for up to %.1fs user=%s token=%s: %s", what, left, run.user_id, run.token, exc, extra=run_fields(run))
                time.sleep(min(next(delays), left))
                continue
            if failures:
                logger.info("%s succeeded after %s failed attempts user=%s token=%s", what, failures, run.user_id, run.token, extra=run_fields(run))
            return result

    def _call_task(
        self, run: ClaimedRun, state: _InProgress, began: float, progress: RunProgress,
    ) -> tuple[RunStatus, str | None, BaseException | None, _Ended]:
        """The task's outcome, the exception to re-raise after recording it: a real shutdown
        request (a task that raises SystemExit or KeyboardInterrupt by itself fails its run and
        leaves the process alone), or a worker's timeout (RunTimedOut: the run fails, RQ fails the
        job); and its result (or whether its failure is permanent). `began`: perf_counter at the
        start of the run."""
        context = RunContext(slot=run.slot, trigger=str(run.trigger), attempt=run.attempt, reporter=progress)
        try:
            try:
                outcome = self.task(run.user_id, context)
                if inspect.isawaitable(outcome):  # an async task: run it on the process's event loop
                    outcome = self._await(state, self.task_loop.submit(outcome, label=f"user={run.user_id} token={run.token}"))
            finally:
                _here.finishing = True  # from here on a worker's timeout leaves the run to finish
        except RunTimedOut as exc:  # the worker's timeout interrupted the task (worker.timeouts)
            elapsed = time.perf_counter() - began
            logger.error("run timed out user=%s slot=%s token=%s after %.1f s", run.user_id, run.slot, run.token, elapsed, extra=run_fields(run))
            return RunStatus.FAILED, f"timed out after {elapsed:.0f} s (JOB_TIMEOUT {self.settings.JOB_TIMEOUT} s)", exc, _RETRYABLE
        except PermanentError as exc:  # the task says retrying cannot help
            logger.info("task failed for good user=%s slot=%s token=%s: %s", run.user_id, run.slot, run.token, exc, extra=run_fields(run))
            return RunStatus.FAILED, _error_text(exc), None, _Ended(permanent=True)
        except Exception as exc:  # the task's failure is the run's outcome, not ours
            logger.info("task failed user=%s slot=%s token=%s: %s", run.user_id, run.slot, run.token, exc, extra=run_fields(run))
            return RunStatus.FAILED, _error_text(exc), None, _RETRYABLE
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit from the task
            reraise = exc if shutdown.requested() else None
            logger.warning(
                "task raised %s user=%s slot=%s token=%s%s", type(exc).__name__, run.user_id, run.slot, run.token,
                " (shutdown requested: stopping after recording the run)" if reraise else "", extra=run_fields(run),
            )
            return RunStatus.FAILED, _error_text(exc), reraise, _RETRYABLE
        return RunStatus.SUCCEEDED, None, None, _Ended(result=encode_result(outcome))

    def _await(self, state: _InProgress, future: Future[object]) -> object:
        """Wait for an async task on the loop; a SystemExit/KeyboardInterrupt it raised comes back
        as itself (the loop never saw it: core.event_loop), a timeout cancels it."""
        with self._end_lock:
            state.future = future
            timed_out = state.ended == "timed out"
        if timed_out:  # claimed before the future existed
            future.cancel()
        try:
            return future.result()
        except TaskExited as exc:
            raise exc.original from None
        except RunTimedOut:  # interrupted while waiting (RQ's SIGALRM): stop the coroutine too
            future.cancel()
            raise

    def _finish_riding_out(
        self, run: ClaimedRun, status: RunStatus, error: str | None, elapsed: float, enqueued_at: datetime | None,
        progress: tuple[Report | None, Report | None] = (None, None), ended: _Ended | None = None,
    ) -> RunResult:
        """`_finish`, retried through a database outage while the lease holds.

        Why a retry is safe: the write is one transaction fenced on the token, so an attempt that
        failed before COMMIT left nothing behind, and a lease lost meanwhile makes the retry record
        `stale` instead of overwriting. The one unknown is a COMMIT whose answer was lost: a retry
        first asks whether this worker's history row for the run is there, and if so the result
        stands as recorded (no second row, no `stale`).
        """
        attempts = 0

        def attempt() -> RunResult:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                landed = self._already_finished(run)
                if landed is not None:
                    logger.info("run result had been recorded before the connection failed user=%s token=%s status=%s",
                                run.user_id, run.token, landed.value, extra=run_fields(run))
                    return RunResult(run.user_id, landed, error, 0, landed is not RunStatus.STALE)
            return self._finish(run, status, error, elapsed, enqueued_at, progress=progress, ended=ended or _RETRYABLE)

        return self._retrying(run, "recording the result", attempt, lambda: self.lease_keeper.seconds_left(run))

    def _already_finished(self, run: ClaimedRun) -> RunStatus | None:
        with self.engine.connect() as conn:
            return queries.finished_run_status(conn, user_id=run.user_id, token=run.token, slot=run.slot, worker=self.worker_name)

    def _finish(
        self, run: ClaimedRun, status: RunStatus, error: str | None, elapsed: float, enqueued_at: datetime | None,
        progress: tuple[Report | None, Report | None] = (None, None),  # (last reported, not yet stored): RunProgress.close()
        ended: _Ended | None = None,
    ) -> RunResult:
        duration_ms = int(elapsed * 1000)
        ended = ended or _RETRYABLE
        retrying = False
        with self.engine.begin() as conn:
            locked = fenced.lock_if_leased(conn, user_id=run.user_id, token=run.token, now=self.clock.sql_now())
            extra: list[RunRecord] = []  # a dropped retry, a pause: history rows of their own, in the same INSERT
            if locked is None:
                now, applied, skipped = self.clock.now(conn), False, 0
            else:
                now = locked.now
                policy = effective_retry_policy(locked, self.retry_defaults)
                slot = settle(user_id=run.user_id, rule=locked.rule, slot=run.slot, attempt=run.attempt, now=now, status=status,
                              error=error, policy=policy, failed_slots=locked.failed_slots, permanent=ended.permanent)
                skipped, retrying = slot.skipped, slot.retrying
                applied = fenced.finish_run(
                    conn, user_id=run.user_id, token=run.token, started_at=self._started_at(now, duration_ms),
                    status=status, error=error, next_run_at=slot.next_run_at, now=now, progress=progress[1],
                    retrying=slot.retrying, failed_slots=slot.failed_slots, paused_reason=slot.paused_reason,
                )
                extra = self._slot_records(run, slot, now) if applied else []
            recorded_status = status if applied else RunStatus.STALE
            recorded_error = error if applied else f"lease lost before the result was written; task {status.value}" + (f": {error}" if error else "")
            started_at = self._started_at(now, duration_ms)
            record = self._record(run, recorded_status, recorded_error, skipped, enqueued_at, started_at, now, duration_ms,
                                  result=ended.result, progress_message=progress[0][1] if progress[0] else None)
            insert_runs(conn, [record, *extra])
        if applied:
            logger.info("run finished user=%s slot=%s attempt=%s token=%s status=%s skipped=%s%s", run.user_id, run.slot, run.attempt, run.token,
                        status.value, skipped, " retrying" if retrying else "", extra=run_fields(run))
        else:
            logger.warning("run result refused, lease lost user=%s slot=%s token=%s status=%s", run.user_id, run.slot, run.token, status.value, extra=run_fields(run))
        return RunResult(run.user_id, status if applied else RunStatus.STALE, error, skipped, applied, retrying)

    def _slot_records(self, run: ClaimedRun, slot: SlotOutcome, now: datetime) -> list[RunRecord]:
        """The history rows the slot's fate adds to the attempt's own: a dropped retry (counted
        there) and a pause (why), each logged."""
        records = []
        if slot.dropped_retry_at is not None:
            note = slot.dropped_note(run.attempt)
            logger.warning("%s user=%s slot=%s token=%s", note, run.user_id, run.slot, run.token, extra=run_fields(run))
            records.append(dropped_record(run.user_id, run.slot, run.attempt + 1, note, now, str(run.trigger)))
        if slot.paused_reason is not None:
            logger.error("schedule paused user=%s slot=%s token=%s: %s", run.user_id, run.slot, run.token, slot.paused_reason, extra=run_fields(run))
            records.append(paused_record(run.user_id, run.slot, run.attempt, slot.paused_reason, now, str(run.trigger)))
        return records

    @staticmethod
    def _started_at(finished_at: datetime, duration_ms: int) -> datetime:
        """When the task started, on the decision clock: its end minus the measured duration
        (saves reading the database clock a second time per run)."""
        return to_ms_precision(finished_at - timedelta(milliseconds=duration_ms))

    def _record_skipped(self, run: ClaimedRun, enqueued_at: datetime | None) -> RunResult:
        def record(conn: Connection) -> None:
            now = self.clock.now(conn)
            insert_runs(conn, [self._record(run, RunStatus.SKIPPED, "lease no longer held when the job started", 0, enqueued_at, None, now, None)])

        # Rerun only if the connection died before COMMIT: the first insert was discarded with it.
        run_transaction(self.engine, record, what="recording a skipped run")
        logger.warning("run skipped, lease not held user=%s slot=%s token=%s", run.user_id, run.slot, run.token, extra=run_fields(run))
        return RunResult(run.user_id, RunStatus.SKIPPED, applied=False)

    def _record(
        self, run: ClaimedRun, status: RunStatus, error: str | None, skipped: int, enqueued_at: datetime | None,
        started_at: datetime | None, finished_at: datetime, duration_ms: int | None, *,
        result: str | None = None, progress_message: str | None = None,
    ) -> RunRecord:
        # Built whole: dataclasses.replace cost ~25 µs a call, 2-3 % of a no-op sync run (a probe: docs/performance.md).
        return RunRecord(
            user_id=run.user_id, trigger=str(run.trigger), slot=run.slot, attempt=run.attempt,
            lease_token=run.token, status=status, error=error, skipped_slots=skipped,
            enqueued_at=enqueued_at, started_at=started_at, finished_at=finished_at,
            duration_ms=duration_ms, worker=self.worker_name, progress_message=progress_message, result=result,
        )


@dataclass(frozen=True)
class _Ended:
    """What the task's end says beyond its status: its encoded result (core.tasks.encode_result),
    or that its failure is permanent (PermanentError: not retried)."""

    result: str | None = None
    permanent: bool = False


_RETRYABLE = _Ended()


def _error_text(exc: BaseException) -> str:
    """The exception as lastError and history show it: the task (or a remote answer it quotes)
    chooses this text, so terminal and bidi control characters are cleaned out before it is stored."""
    return clean_error("".join(traceback.format_exception_only(type(exc), exc))) or type(exc).__name__
