"""The dispatch pass: claim due rows in leased batches, then enqueue them (queue mode) or run them
in this process (sync mode). One "now" per pass, from the database where hosts meet.

Order inside a batch is what makes it safe: the claim commits before Redis is touched, so no row
lock is held across a network call; if Redis then fails, the batch's leases are released in the
same pass (the rows are due again at once) and the pass ends with QueueUnavailable.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine

from monitor_scheduler import repository as repo
from monitor_scheduler.clock import Clock
from monitor_scheduler.exceptions import ConfigurationError, LeaseHeld, QueueUnavailable, UnknownUser
from monitor_scheduler.repository import ClaimedRun, RunStatus, Trigger
from monitor_scheduler.settings import Settings
from dispatcher.enqueue import RqEnqueuer
from worker.runner import Runner

logger = logging.getLogger(__name__)

# Sync mode claims small batches so that, when the time budget runs out, few leases are handed
# back unrun and none wait for their TTL.
SYNC_CLAIM_BATCH = 20


class Mode(StrEnum):
    QUEUE = "queue"
    SYNC = "sync"


@dataclass
class DispatchSummary:
    mode: str
    now: str
    claimed: int = 0
    enqueued: int = 0
    ran: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    skipped_backpressure: int = 0
    backpressure: bool = False
    budget_exhausted: bool = False
    duration_ms: int = 0
    error: str | None = None
    batches: list[int] = field(default_factory=list, repr=False)

    def line(self) -> str:
        parts = [f"dispatch at={self.now} mode={self.mode}", f"claimed={self.claimed}"]
        if self.mode == Mode.QUEUE:
            parts.append(f"enqueued={self.enqueued}")
        else:
            parts += [f"ran={self.ran}", f"succeeded={self.succeeded}", f"failed={self.failed}"]
        parts += [f"released={self.released}", f"skipped_backpressure={self.skipped_backpressure}"]
        if self.backpressure:
            parts.append("backpressure=yes")
        if self.budget_exhausted:
            parts.append("budget_exhausted=yes")
        parts.append(f"duration_ms={self.duration_ms}")
        if self.error:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)

    def as_dict(self) -> dict:  # type: ignore[type-arg]
        data = asdict(self)
        data.pop("batches")
        return data


def new_lease_token() -> str:
    """Unique per claim batch; says which host and process holds a lease (≤ 64 chars)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        *,
        enqueuer: RqEnqueuer | None = None,
        runner: Runner | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.enqueuer = enqueuer
        self.runner = runner
        self.monotonic = monotonic

    # --- one pass -------------------------------------------------------------------------------

    def tick(self, mode: Mode, now: datetime | None = None) -> DispatchSummary:
        """One dispatch pass at `now` (the database's clock when None). Raises QueueUnavailable
        after releasing what it could not enqueue; the summary is on the exception."""
        started = time.perf_counter()
        if now is None:
            with self.engine.connect() as conn:
                now = self.clock.now(conn)
        summary = DispatchSummary(mode=mode.value, now=now.isoformat(timespec="milliseconds") + "Z")
        try:
            if mode is Mode.QUEUE:
                self._queue_pass(now, summary)
            else:
                self._sync_pass(now, summary)
        finally:
            summary.duration_ms = int((time.perf_counter() - started) * 1000)
        self._record_pass(summary)
        logger.info("%s", summary.line())
        return summary

    def _record_pass(self, summary: DispatchSummary) -> None:
        """Note a successful pass for the dead-man check; a failed pass raised before this."""
        with self.engine.begin() as conn:
            repo.record_dispatch_pass(conn, at=self.clock.now(conn), detail=json.dumps(summary.as_dict()))

    def _queue_pass(self, now: datetime, summary: DispatchSummary) -> None:
        enqueuer = self._require_enqueuer()
        depth = enqueuer.depth()  # before anything is claimed: fails fast when Redis is down
        remaining = self.settings.DISPATCH_BATCH_SIZE
        lease_until = repo.lease_until(now, self.settings.DISPATCH_LOCK_TTL)
        while remaining > 0:
            if depth >= self.settings.QUEUE_MAX_DEPTH:
                summary.backpressure = True
                with self.engine.connect() as conn:
                    summary.skipped_backpressure = min(remaining, repo.count_due(conn, now=now))
                logger.warning(
                    "queue holds %s jobs (QUEUE_MAX_DEPTH=%s): not enqueueing, %s due users wait",
                    depth, self.settings.QUEUE_MAX_DEPTH, summary.skipped_backpressure,
                )
                return
            limit = min(self.settings.DISPATCH_CHUNK_SIZE, remaining)
            claimed = self._claim(now, limit, lease_until, Trigger.SCHEDULE)
            if not claimed:
                return
            summary.claimed += len(claimed)
            summary.batches.append(len(claimed))
            try:
                depth = enqueuer.enqueue(claimed)
            except QueueUnavailable as exc:
                summary.released += self._release(claimed)
                summary.error = str(exc)
                logger.error("enqueue failed, released %s leases: %s", len(claimed), exc)
                exc.summary = summary  # type: ignore[attr-defined]
                raise
            summary.enqueued += len(claimed)
            remaining -= len(claimed)
            if len(claimed) < limit:
                return

    def _sync_pass(self, now: datetime, summary: DispatchSummary) -> None:
        runner = self._require_runner()
        deadline = self.monotonic() + self.settings.SYNC_TIME_BUDGET
        remaining = self.settings.DISPATCH_BATCH_SIZE
        lease_until = repo.lease_until(now, self.settings.DISPATCH_LOCK_TTL)
        while remaining > 0 and not self._out_of_time(deadline, summary):
            limit = min(SYNC_CLAIM_BATCH, remaining)
            claimed = self._claim(now, limit, lease_until, Trigger.SYNC)
            if not claimed:
                return
            summary.claimed += len(claimed)
            summary.batches.append(len(claimed))
            for index, run in enumerate(claimed):
                if self._out_of_time(deadline, summary):
                    summary.released += self._release(claimed[index:])
                    return
                self._count(summary, runner.execute(run, enqueued_at=run.claimed_at).status)
            remaining -= len(claimed)
            if len(claimed) < limit:
                return

    def _out_of_time(self, deadline: float, summary: DispatchSummary) -> bool:
        if self.monotonic() >= deadline:
            summary.budget_exhausted = True
            return True
        return False

    @staticmethod
    def _count(summary: DispatchSummary, status: RunStatus) -> None:
        summary.ran += 1
        if status is RunStatus.SUCCEEDED:
            summary.succeeded += 1
        elif status is RunStatus.FAILED:
            summary.failed += 1

    # --- one user, now ---------------------------------------------------------------------------

    def run_user_now(self, user_id: str, mode: Mode, now: datetime | None = None) -> DispatchSummary:
        """Direct mode: run `user_id` now whatever its nextRunAt, never beside a live run of it."""
        started = time.perf_counter()
        if mode is Mode.QUEUE:
            self._require_enqueuer().depth()  # fail fast, before the lease is taken
        token = new_lease_token()
        with self.engine.begin() as conn:
            now = now or self.clock.now(conn)
            claimed = repo.claim_user(
                conn, user_id=user_id, now=now, token=token,
                lease_until=repo.lease_until(now, self.settings.DISPATCH_LOCK_TTL), trigger=Trigger.MANUAL,
            )
            if claimed is None:
                existing = repo.get_schedule(conn, user_id)
        if claimed is None:
            if existing is None:
                raise UnknownUser(f"no schedule for user {user_id!r}")
            raise LeaseHeld(f"user {user_id!r} is running (lease held by {existing.locked_by} until {existing.locked_until:%Y-%m-%d %H:%M:%S}Z)",
                            until=existing.locked_until)
        summary = DispatchSummary(mode=mode.value, now=now.isoformat(timespec="milliseconds") + "Z", claimed=1)
        try:
            if mode is Mode.QUEUE:
                try:
                    self._require_enqueuer().enqueue([claimed])
                    summary.enqueued = 1
                except QueueUnavailable as exc:
                    summary.released = self._release([claimed])
                    summary.error = str(exc)
                    exc.summary = summary  # type: ignore[attr-defined]
                    raise
            else:
                self._count(summary, self._require_runner().execute(claimed, enqueued_at=now).status)
        finally:
            summary.duration_ms = int((time.perf_counter() - started) * 1000)
        logger.info("direct run user=%s token=%s %s", user_id, token, summary.line())
        return summary

    # --- helpers ---------------------------------------------------------------------------------

    def _claim(self, now: datetime, limit: int, lease_until: datetime, trigger: Trigger) -> list[ClaimedRun]:
        token = new_lease_token()
        with self.engine.begin() as conn:
            return repo.claim_due(conn, now=now, limit=limit, token=token, lease_until=lease_until, trigger=trigger)

    def _release(self, claimed: list[ClaimedRun]) -> int:
        released = 0
        by_token: dict[str, list[str]] = {}
        for run in claimed:
            by_token.setdefault(run.token, []).append(run.user_id)
        with self.engine.begin() as conn:
            for token, user_ids in by_token.items():
                released += repo.release_leases(conn, user_ids=user_ids, token=token)
        return released

    def _require_enqueuer(self) -> RqEnqueuer:
        if self.enqueuer is None:
            raise ConfigurationError("invalid setting REDIS_URL: queue mode needs it (or use --mode sync)")
        return self.enqueuer

    def _require_runner(self) -> Runner:
        if self.runner is None:
            raise RuntimeError("sync mode needs a runner")
        return self.runner
