"""Executes one claimed run: the same code for RQ workers, sync mode and direct mode.

1. Check the lease is still ours (a fenced renew from "now"). If not, record a skipped run and stop.
2. Run the task while a heartbeat thread renews the lease every third of its length, so a run
   longer than DISPATCH_LOCK_TTL keeps it; if the process dies, the heartbeat dies with it and the
   lease runs out, so the user is due again within one TTL.
3. In one transaction: lock the row if still ours, write outcome + next slot + release in one
   write fenced on `lockedBy = token`, and insert the history row. If the lease was lost, the
   result is recorded in history as `stale` and nothing on the schedule is overwritten.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from monitor_scheduler import repository as repo
from monitor_scheduler.clock import Clock, to_ms_precision
from monitor_scheduler.logs import run_fields
from monitor_scheduler.repository import ClaimedRun, RunRecord, RunStatus
from monitor_scheduler.scheduling import next_fixed_rate_slot
from monitor_scheduler.settings import Settings
from worker.tasks import RunContext, Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    user_id: str
    status: RunStatus
    error: str | None = None
    skipped_slots: int = 0
    applied: bool = True  # False when the lease was lost and the schedule was left alone


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseHeartbeat:
    """Renews a lease in the background until stopped; notes when the lease was lost."""

    def __init__(self, engine: Engine, clock: Clock, run: ClaimedRun, lease_ms: int, period: float) -> None:
        self._engine, self._clock, self._run, self._lease_ms, self._period = engine, clock, run, lease_ms, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-heartbeat-{run.user_id}", daemon=True)
        self.lost = False

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._period + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            try:
                with self._engine.begin() as conn:
                    held = repo.renew_lease(
                        conn, user_id=self._run.user_id, token=self._run.token, lease_until=self._clock.sql_now(self._lease_ms)
                    )
            except Exception:  # a failed renewal is retried next period; the lease may still hold
                logger.warning("lease renewal failed user=%s token=%s", self._run.user_id, self._run.token, exc_info=True, extra=run_fields(self._run))
                continue
            if not held:
                self.lost = True
                logger.warning("lease lost while running user=%s token=%s", self._run.user_id, self._run.token, extra=run_fields(self._run))
                return


class Runner:
    def __init__(self, engine: Engine, settings: Settings, clock: Clock, task: Task, worker_name: str | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.task = task
        self.worker_name = worker_name or default_worker_name()

    def execute(self, run: ClaimedRun, *, enqueued_at: datetime | None = None) -> RunResult:
        if not self._lease_still_ours(run):
            return self._record_skipped(run, enqueued_at)
        began = time.perf_counter()
        with LeaseHeartbeat(self.engine, self.clock, run, self.settings.DISPATCH_LOCK_TTL, self.settings.heartbeat_seconds):
            status, error = self._call_task(run)
        return self._finish(run, status, error, time.perf_counter() - began, enqueued_at)

    def _lease_still_ours(self, run: ClaimedRun) -> bool:
        """Renew the lease from now (the queue wait may have used much of it), fenced on the token:
        one statement, "now" computed by the clock inside it."""
        with self.engine.begin() as conn:
            return repo.renew_lease(
                conn, user_id=run.user_id, token=run.token, lease_until=self.clock.sql_now(self.settings.DISPATCH_LOCK_TTL)
            )

    def _call_task(self, run: ClaimedRun) -> tuple[RunStatus, str | None]:
        context = RunContext(slot=run.slot, trigger=str(run.trigger), attempt=run.attempt)
        try:
            self.task(run.user_id, context)
        except Exception as exc:  # the task's failure is the run's outcome, not ours
            logger.info("task failed user=%s slot=%s token=%s: %s", run.user_id, run.slot, run.token, exc, extra=run_fields(run))
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return RunStatus.FAILED, text
        return RunStatus.SUCCEEDED, None

    def _finish(
        self, run: ClaimedRun, status: RunStatus, error: str | None, elapsed: float, enqueued_at: datetime | None,
    ) -> RunResult:
        duration_ms = int(elapsed * 1000)
        with self.engine.begin() as conn:
            locked = repo.lock_if_leased(conn, user_id=run.user_id, token=run.token, now=self.clock.sql_now())
            if locked is None:
                now, applied, skipped = self.clock.now(conn), False, 0
            else:
                interval, now = locked
                nxt = next_fixed_rate_slot(run.slot, interval, now)
                skipped = nxt.skipped
                applied = repo.finish_run(
                    conn, user_id=run.user_id, token=run.token, started_at=self._started_at(now, duration_ms),
                    status=status, error=error, next_run_at=nxt.at, now=now,
                )
            recorded_status = status if applied else RunStatus.STALE
            recorded_error = error if applied else f"lease lost before the result was written; task {status.value}" + (f": {error}" if error else "")
            started_at = self._started_at(now, duration_ms)
            repo.insert_runs(conn, [self._record(run, recorded_status, recorded_error, skipped, enqueued_at, started_at, now, duration_ms)])
        if applied:
            logger.info("run finished user=%s slot=%s token=%s status=%s skipped=%s", run.user_id, run.slot, run.token, status.value, skipped, extra=run_fields(run))
        else:
            logger.warning("run result refused, lease lost user=%s slot=%s token=%s status=%s", run.user_id, run.slot, run.token, status.value, extra=run_fields(run))
        return RunResult(run.user_id, status if applied else RunStatus.STALE, error, skipped, applied)

    @staticmethod
    def _started_at(finished_at: datetime, duration_ms: int) -> datetime:
        """When the task started, on the decision clock: its end minus the measured duration
        (saves reading the database clock a second time per run)."""
        return to_ms_precision(finished_at - timedelta(milliseconds=duration_ms))

    def _record_skipped(self, run: ClaimedRun, enqueued_at: datetime | None) -> RunResult:
        with self.engine.begin() as conn:
            now = self.clock.now(conn)
            repo.insert_runs(conn, [self._record(run, RunStatus.SKIPPED, "lease no longer held when the job started", 0, enqueued_at, None, now, None)])
        logger.warning("run skipped, lease not held user=%s slot=%s token=%s", run.user_id, run.slot, run.token, extra=run_fields(run))
        return RunResult(run.user_id, RunStatus.SKIPPED, applied=False)

    def _record(
        self, run: ClaimedRun, status: RunStatus, error: str | None, skipped: int, enqueued_at: datetime | None,
        started_at: datetime | None, finished_at: datetime, duration_ms: int | None,
    ) -> RunRecord:
        return RunRecord(
            user_id=run.user_id, trigger=str(run.trigger), slot=run.slot, attempt=run.attempt,
            lease_token=run.token, status=status, error=error, skipped_slots=skipped,
            enqueued_at=enqueued_at, started_at=started_at, finished_at=finished_at,
            duration_ms=duration_ms, worker=self.worker_name,
        )
