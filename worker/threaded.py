"""`monitor-scheduler worker --threads N`: one RQ worker process that runs up to N jobs at once.

RQ's own work loop stays in charge (`BaseWorker.work`: suspension, maintenance, dequeue, signals,
registration); this class changes three things:

- **dequeue** waits for a free slot first, so at most N jobs are taken from the queue at a time;
- **execute_job** prepares the RQ execution in the main thread (started registry, worker state)
  and hands the job to a run thread instead of running it; RQ's `perform_job` runs there, so each
  job goes through RQ's started, finished and failed registries like any RQ job;
- **timeouts**: SIGALRM works on the main thread only and a thread cannot be killed, so jobs run
  without RQ's death penalty and a watchdog thread notices a job past its timeout. It only decides:
  for a run, the executor is the one arbiter of "returned or timed out" (`Runner.claim_timeout`,
  no database; an async task is cancelled there); then another thread records the run failed
  through the executor's fenced finish (`Runner.record_timeout`: the lease is released, the user
  moves on; it may retry through a database outage without holding up any other timeout), fails
  the RQ job with RQ's `JobTimeoutException` and frees its slot. A sync task keeps its thread until
  it returns; its late result is then refused (recorded `stale`) and the RQ job stays failed.

Warm shutdown (SIGTERM/SIGINT): no more jobs are taken, every run in flight finishes and is
recorded, then the worker unregisters; a second signal abandons the runs in flight (their leases
expire and the dispatcher recovers them, as after a crash). The worker announces N in its RQ
worker hash (`core.capacity.WORKER_THREADS_FIELD`). An async task needs no thread of its own to
run: it runs on the executor's one event loop (core.event_loop.EventLoopThread); see
docs/operations.md "Threads".
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal

from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.worker import WorkerStatus
from typing_extensions import override

from core import shutdown
from core.capacity import WORKER_THREADS_FIELD
from core.run_threads import RunThreads
from dispatcher.jobspec import RUN_JOB, run_from_job_args
from worker import context
from worker.outages import RidingOutRedis
from worker.stops import NotesStopRequests

logger = logging.getLogger(__name__)

WATCHDOG_PERIOD = 1.0  # seconds between timeout checks
HEARTBEAT_PERIOD = 15.0  # seconds between worker heartbeats while the main thread waits
ANNOUNCE_PERIOD = 30.0  # seconds between re-announcements of the thread count

# Sets a field only in a hash that exists: a worker whose hash expired must not be resurrected as
# a hash without TTL holding only this field (RQ rewrites the whole hash when it notices).
_HSET_IF_EXISTS = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) end return -1"


class NoDeathPenalty(BaseDeathPenalty):
    """No timer around a job: the watchdog of ThreadedWorker enforces job timeouts."""

    @override
    def setup_death_penalty(self) -> None:
        pass

    @override
    def cancel_death_penalty(self) -> None:
        pass


@dataclass(eq=False)
class Flight:
    """A job in progress on a run thread."""

    job: Job
    queue: Queue
    execution: Execution
    started: float = field(default_factory=time.monotonic)
    # How its RQ outcome was settled (under the worker's lock): by its thread's return, or by the
    # watchdog once the timeout was decided (for a run: by the executor, `Runner.claim_timeout`).
    end: Literal["returned", "timed out"] | None = None

    @property
    def deadline(self) -> float | None:
        timeout = self.job.timeout
        return None if timeout is None or timeout < 0 else self.started + timeout


class ThreadedWorker(RidingOutRedis, NotesStopRequests, SimpleWorker):
    """An RQ worker that runs up to `threads` jobs at once in its own process (see the module); like
    the other worker classes (worker.pool) it notes stop requests and rides out Redis outages.
    rq.SimpleWorker's heartbeat TTL fits: no horse to monitor, a job's heartbeat covers its timeout."""

    death_penalty_class = NoDeathPenalty
    default_threads = 1

    def __init__(self, queues: Sequence[Queue] | Sequence[str], *, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(queues, **kwargs)
        self.threads = threads or self.default_threads
        self._slots = threading.Condition()
        self._flights: dict[str, Flight] = {}
        self._overdue: dict[str, Flight] = {}  # timed out, their threads still running
        self._run_threads = RunThreads("run")
        self._waiting_for_work = False  # the main thread waits for a slot or a job: a stop may interrupt it
        self._watchdog_started = False

    @classmethod
    def with_threads(cls, threads: int) -> type[ThreadedWorker]:
        """This class with `threads` as its default (RQ's WorkerPool builds workers from a class)."""
        return type(cls.__name__, (cls,), {"default_threads": threads, "__module__": cls.__module__})

    # --- announcing the concurrency ----------------------------------------------------------

    @override
    def serialize(self) -> dict[str, Any]:
        """RQ writes the worker hash from this on registration and whenever it rewrites the hash."""
        data: dict[str, Any] = super().serialize()
        data[WORKER_THREADS_FIELD] = self.threads
        return data

    def announce_threads(self) -> None:
        self.connection.eval(_HSET_IF_EXISTS, 1, self.key, WORKER_THREADS_FIELD, self.threads)

    # --- the dequeue side (main thread) -------------------------------------------------------

    @override
    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> tuple[Job, Queue] | None:
        self._start_watchdog()
        self._waiting_for_work = True
        try:
            self._wait_until(lambda: len(self._flights) < self.threads)
            if shutdown.requested():  # a stop came before the wait began
                raise StopRequested()
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        finally:
            self._waiting_for_work = False

    @override
    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        flight = Flight(job, queue, execution)
        with self._slots:
            self._flights[job.id] = flight
        self._run_threads.submit(self._perform, flight)

    @override
    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        # RQ sets IDLE whenever the main thread goes back to the queue; the worker is busy while any
        # of its runs is.
        if state == WorkerStatus.IDLE and self._flights:
            state = WorkerStatus.BUSY
        super().set_state(state, pipeline=pipeline)

    def _wait_until(self, ready: Callable[[], bool]) -> None:
        """Wait (heartbeating the worker) until `ready()`; a signal handler may raise meanwhile."""
        last_beat = time.monotonic()
        while True:
            with self._slots:
                if ready():
                    return
                self._slots.wait(timeout=1.0)
            if time.monotonic() - last_beat >= HEARTBEAT_PERIOD:
                self.heartbeat()
                last_beat = time.monotonic()

    # --- the run side (run threads) ------------------------------------------------------------

    def _perform(self, flight: Flight) -> None:
        try:
            self.perform_job(flight.job, flight.queue, flight.execution)
        finally:
            self._land(flight)

    def _land(self, flight: Flight, *, overdue: bool = False) -> None:
        """Free the flight's slot; `overdue`: it timed out while its thread runs on (kept aside until
        that thread ends, so that its late outcome is told apart from RQ's own clean-up)."""
        job_id = flight.job.id
        with self._slots:
            if self._flights.get(job_id) is flight:
                del self._flights[job_id]
                if overdue:
                    self._overdue[job_id] = flight
            elif not overdue and self._overdue.get(job_id) is flight:
                del self._overdue[job_id]
            self._slots.notify_all()

    def _settle_returned(self, job: Job) -> bool:
        """A job reached RQ's outcome: True to write it, False if it is a run thread's job whose
        timeout came first (the watchdog failed it)."""
        with self._slots:
            flight = self._flights.get(job.id) or self._overdue.get(job.id)
            if flight is None:  # not a job of a run thread (RQ's own clean-up of a stuck job)
                return True
            if flight.end == "timed out":
                return False
            flight.end = "returned"
            return True

    @override
    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution) -> None:
        if self._settle_returned(job):
            super().handle_job_success(job, queue, started_job_registry, execution)
        else:
            logger.warning("job %s returned after its timeout; it stays failed (its run's late result was refused)", job.id)

    @override
    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry | None = None, exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        if self._settle_returned(job):
            super().handle_job_failure(job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution)
        else:
            logger.warning("job %s raised after its timeout; it stays failed", job.id)

    # --- the watchdog ---------------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        if not self._watchdog_started:
            self._watchdog_started = True
            threading.Thread(target=self._watch, name="run-watchdog", daemon=True).start()

    def _watch(self) -> None:
        """Decide which jobs timed out and hand each to a run thread: nothing here waits for the
        database, nor for Redis beyond the thread-count announcement (one short command)."""
        last_announce = time.monotonic()
        while True:
            time.sleep(WATCHDOG_PERIOD)
            now = time.monotonic()
            with self._slots:
                overdue = [f for f in self._flights.values() if f.end is None and (d := f.deadline) is not None and now > d]
            for flight in overdue:
                try:
                    if self._decide_timeout(flight):
                        self._run_threads.submit(self._time_out, (flight, now - flight.started))
                except Exception:  # the next check decides again; the run is still in flight
                    logger.exception("watchdog: could not time out job %s", flight.job.id)
            if now - last_announce >= ANNOUNCE_PERIOD:
                last_announce = now
                try:
                    self.announce_threads()
                except Exception:
                    logger.warning("watchdog: could not announce the thread count", exc_info=True)

    def _decide_timeout(self, flight: Flight) -> bool:
        """True if `flight` timed out: for a run, if the executor says its task was still running
        (else it returned, or has not started: its thread ends the job, or the next check decides)."""
        job = flight.job
        with self._slots:
            if flight.end is not None:
                return False
            if job.func_name == RUN_JOB:
                run, _ = run_from_job_args(*job.args, **job.kwargs)
                if not context.get_runner().claim_timeout(run):
                    return False
            flight.end = "timed out"
            return True

    def _time_out(self, work: tuple[Flight, float]) -> None:
        """On a run thread: record the timed-out run failed, fail its RQ job, free its slot."""
        flight, elapsed = work
        job = flight.job
        try:
            if job.func_name == RUN_JOB:
                run, enqueued_at = run_from_job_args(*job.args, **job.kwargs)
                context.get_runner().record_timeout(run, elapsed=elapsed, enqueued_at=enqueued_at)
        except Exception:  # its lease runs out and a later pass records the run lost; the job still fails
            logger.exception("could not record the timeout of job %s", job.id)
        logger.error("job %s passed its timeout (%s s) on a thread; failing it and freeing its slot", job.id, job.timeout)
        exc = JobTimeoutException(f"Task exceeded maximum timeout value ({job.timeout} seconds)")
        try:
            self.handle_execution_ended(job, flight.queue, job.failure_callback_timeout)
            super().handle_job_failure(
                job, flight.queue, started_job_registry=flight.queue.started_job_registry,
                exc_string="".join(traceback.format_exception_only(type(exc), exc)), execution=flight.execution,
            )
        finally:
            self._land(flight, overdue=True)

    # --- shutdown ---------------------------------------------------------------------------------

    @override
    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """First stop request: RQ stops taking jobs (while any run is in flight the worker is busy,
        so RQ waits for the work loop to come round); the main thread is interrupted only where it
        waits for work (RQ's rule of "interrupt only when idle" would leave it blocked in the
        dequeue)."""
        super().request_stop(signum, frame)  # RQ raises StopRequested itself when the worker is not busy
        logger.info("worker %s: warm shutdown, waiting for %d runs in flight (a second signal abandons them)", self.name, len(self._flights))
        if self._waiting_for_work:
            raise StopRequested()

    @override
    def teardown(self) -> None:
        try:
            self._wait_until(lambda: not self._flights)
        except SystemExit:
            logger.warning("worker %s: cold shutdown, abandoning %d runs in flight (their leases expire)", self.name, len(self._flights))
            super().teardown()
            raise
        super().teardown()

