"""`monitor-scheduler worker --threads N`: one RQ worker process that runs up to N jobs at once.

RQ's own work loop stays in charge (`BaseWorker.work`: suspension, maintenance, dequeue, signals,
registration); this class changes three things:

- **dequeue** waits for a free slot first, so at most N jobs are taken from the queue at a time;
- **execute_job** prepares the RQ execution in the main thread (started registry, worker state)
  and hands the job to a run thread instead of running it; RQ's `perform_job` runs there, so each
  job goes through RQ's started, finished and failed registries like any RQ job;
- **timeouts**: SIGALRM works on the main thread only and a thread cannot be killed, so jobs run
  without RQ's death penalty and a watchdog thread ends a job that passes its timeout: the run is
  recorded failed through the executor's fenced finish (`Runner.time_out`: the lease is released,
  the user moves on), the RQ job is failed with RQ's `JobTimeoutException`, and its slot is freed.
  A sync task keeps its thread until it returns; its late result is then refused (recorded
  `stale`) and the RQ job is left as failed. An async task is cancelled at the timeout.

Warm shutdown (SIGTERM/SIGINT): no more jobs are taken, every run in flight finishes and is
recorded, then the worker unregisters; a second signal abandons the runs in flight (their leases
expire and the dispatcher recovers them, as after a crash). The worker announces N in its RQ
worker hash (`core.capacity.WORKER_THREADS_FIELD`). An async task needs no thread of its own to
run: it runs on the executor's one event loop (core.tasks.EventLoopThread); see
docs/operations.md "Threads".
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.worker import WorkerStatus
from typing_extensions import override

from core import shutdown
from core.capacity import WORKER_THREADS_FIELD
from worker import context, jobs
from worker.outages import RidingOutRedis
from worker.stops import NotesStopRequests

logger = logging.getLogger(__name__)

WATCHDOG_PERIOD = 1.0  # seconds between timeout checks
HEARTBEAT_PERIOD = 15.0  # seconds between worker heartbeats while the main thread waits
ANNOUNCE_PERIOD = 30.0  # seconds between re-announcements of the thread count
RUN_JOB = f"{jobs.__name__}.{jobs.run_user_monitor.__name__}"

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
    ended: bool = False  # its RQ outcome is written (or being written) by the thread or the watchdog

    @property
    def deadline(self) -> float | None:
        timeout = self.job.timeout
        return None if timeout is None or timeout < 0 else self.started + timeout


class RunThreads:
    """Daemon threads that take work items from one queue; a thread is started only when none is
    idle, so a process has as many threads as it ever ran jobs at once (plus those left behind by
    timed-out tasks), and none per job. Daemon: a forced stop does not wait for them."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._work: queue_module.SimpleQueue[tuple[Callable[[Flight], None], Flight]] = queue_module.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self.started = 0

    def submit(self, fn: Callable[[Flight], None], flight: Flight) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self.started += 1
                threading.Thread(target=self._loop, name=f"{self._name}-{self.started}", daemon=True).start()
        self._work.put((fn, flight))

    def _loop(self) -> None:
        while True:
            fn, flight = self._work.get()
            try:
                fn(flight)
            except BaseException:  # a run thread outlives any one job; RQ's handlers already recorded it
                logger.exception("run thread: unhandled error in job %s", flight.job.id)
            with self._lock:
                self._idle += 1


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

    def _land(self, flight: Flight) -> None:
        with self._slots:
            if self._flights.get(flight.job.id) is flight:
                del self._flights[flight.job.id]
            self._slots.notify_all()

    def _claim_end(self, flight: Flight | None) -> bool:
        with self._slots:
            if flight is None or flight.ended:
                return False
            flight.ended = True
            return True

    @override
    def _finalize_success(self, job: Job, queue: Queue, execution: Execution, return_value: Any) -> None:
        if self._claim_end(self._flights.get(job.id)):
            super()._finalize_success(job, queue, execution, return_value)
        else:
            logger.warning("job %s returned after its timeout; it stays failed (its run's late result was refused)", job.id)

    @override
    def _finalize_failure(
        self, job: Job, queue: Queue, execution: Execution,
        exc_info: tuple[type[BaseException] | None, BaseException | None, TracebackType | None],
    ) -> None:
        if self._claim_end(self._flights.get(job.id)):
            super()._finalize_failure(job, queue, execution, exc_info)
        else:
            logger.warning("job %s raised after its timeout; it stays failed: %s", job.id, exc_info[1])

    # --- the watchdog ---------------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        if not self._watchdog_started:
            self._watchdog_started = True
            threading.Thread(target=self._watch, name="run-watchdog", daemon=True).start()

    def _watch(self) -> None:
        last_announce = time.monotonic()
        while True:
            time.sleep(WATCHDOG_PERIOD)
            now = time.monotonic()
            with self._slots:
                overdue = [f for f in self._flights.values() if not f.ended and (d := f.deadline) is not None and now > d]
            for flight in overdue:
                try:
                    self._time_out(flight, now - flight.started)
                except Exception:  # the next check retries; the run is still in flight
                    logger.exception("watchdog: could not time out job %s", flight.job.id)
            if now - last_announce >= ANNOUNCE_PERIOD:
                last_announce = now
                try:
                    self.announce_threads()
                except Exception:
                    logger.warning("watchdog: could not announce the thread count", exc_info=True)

    def _time_out(self, flight: Flight, elapsed: float) -> None:
        job = flight.job
        if job.func_name == RUN_JOB:
            run, enqueued_at = jobs.claimed_run(*job.args, **job.kwargs)
            if context.get_runner().time_out(run, elapsed=elapsed, enqueued_at=enqueued_at) is None:
                return  # its task is not running (it returned, or has not started): its thread ends the job
        if not self._claim_end(flight):
            return  # the job ended meanwhile
        logger.error("job %s passed its timeout (%s s) on a thread; failing it and freeing its slot", job.id, job.timeout)
        exc = JobTimeoutException(f"Task exceeded maximum timeout value ({job.timeout} seconds)")
        super()._finalize_failure(job, flight.queue, flight.execution, (JobTimeoutException, exc, None))
        self._land(flight)

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

