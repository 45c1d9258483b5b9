"""Domain types: what a schedule, a claimed run, a run record and a dispatch pass are.

Plain data, no I/O: every layer above the core speaks in these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.clock import utc_text

ERROR_TEXT_LIMIT = 2000


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    SYNC = "sync"


class Mode(StrEnum):
    """How a pass delivers its runs: onto the RQ queue, or through the executor in the process."""

    QUEUE = "queue"
    SYNC = "sync"


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # the job started without its lease (taken over or released): nothing ran
    LOST = "lost"  # the lease expired without a result: the worker died or was stopped
    STALE = "stale"  # the task ran, but the lease was lost before its result could be written
    # History rows that are no attempt (issue 17; core.outcome):
    DROPPED = "dropped"  # a retry that would have started at or after the next slot was dropped
    PAUSED = "paused"  # the schedule paused after its pauseAfter-th consecutive failed slot (error: why)


class RunState(StrEnum):
    """Where a schedule's current run is, from its lease and `runStartedAt`."""

    IDLE = "idle"  # no lease: nothing claimed
    QUEUED = "queued"  # leased, its job waits for a worker (runStartedAt is NULL until the worker starts it)
    RUNNING = "running"  # leased and started: the task runs (and may report progress)


class ScheduleFilter(StrEnum):
    DUE = "due"
    RUNNING = "running"
    FAILING = "failing"
    DISABLED = "disabled"
    STALE = "stale"
    PAUSED = "paused"  # paused after failed slots, until the user or an admin resumes it


@dataclass(frozen=True)
class ClaimedRun:
    """A run this process holds the lease for: enough to execute it and to fence its writes."""

    user_id: str
    slot: datetime
    attempt: int
    token: str
    trigger: Trigger
    claimed_at: datetime


@dataclass(frozen=True)
class Schedule:
    user_id: str
    enabled: bool
    interval_minutes: int
    next_run_at: datetime
    last_run_at: datetime | None
    last_status: str | None
    last_error: str | None
    locked_until: datetime | None
    locked_by: str | None
    run_slot: datetime | None
    attempt: int
    created_at: datetime
    updated_at: datetime
    run_started_at: datetime | None = None  # when the worker started the leased run (NULL: queued)
    progress: float | None = None  # the current (or, once idle, the last) run's reported progress, 0..1
    progress_message: str | None = None
    progress_at: datetime | None = None  # when that progress was stored
    manual_run_at: datetime | None = None  # when the user's own "Run now" last claimed a run (the cooldown)
    cron_expr: str | None = None  # a calendar schedule's expression (None: an interval schedule)
    time_zone: str = "UTC"  # the zone cron_expr is read in
    spread_seconds: int = 0  # bound of a calendar schedule's stable per-user start offset
    # When a run fails (migration 0008); None takes the settings default.
    retries: int | None = None  # attempts after the first within one slot
    retry_backoff_seconds: int | None = None  # base delay of the exponential backoff
    pause_after: int | None = None  # consecutive failed slots before pausing (0: never)
    failed_slots: int = 0  # consecutive slots whose final outcome was a failure
    retrying: bool = False  # run_slot failed and is retried at next_run_at (as attempt + 1)
    paused: bool = False  # a state of its own: not claimed until resumed
    paused_at: datetime | None = None
    paused_reason: str | None = None

    @property
    def kind(self) -> str:
        return "interval" if self.cron_expr is None else "cron"

    def is_running(self, now: datetime) -> bool:
        return self.locked_by is not None and self.locked_until is not None and self.locked_until > now

    @property
    def state(self) -> RunState:
        """Idle, queued or running, from the lease alone (an expired lease keeps its state until a
        pass parks it or takes it over; `is_running(now)` and the stale-lease filter tell expiry)."""
        if self.locked_by is None:
            return RunState.IDLE
        return RunState.QUEUED if self.run_started_at is None else RunState.RUNNING


@dataclass(frozen=True)
class Calendar:
    """The calendar columns of a schedule as one write: cron_expr None switches to the interval."""

    cron_expr: str | None
    time_zone: str = "UTC"
    spread_seconds: int = 0


@dataclass(frozen=True)
class RunRecord:
    user_id: str
    trigger: str
    slot: datetime
    attempt: int
    lease_token: str | None
    status: str
    error: str | None
    skipped_slots: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime
    duration_ms: int | None
    worker: str | None
    id: int | None = None
    progress_message: str | None = None  # the run's last progress message
    result: str | None = None  # the task's returned JSON text (<= 4 KB), or a note why it was not kept


@dataclass
class DispatchSummary:
    """What one dispatch pass (or one direct run) did; printed by the CLI, stored for the dead-man
    check, answered by the cron endpoint."""

    mode: str
    now: str
    claimed: int = 0
    enqueued: int = 0
    ran: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    skipped_backpressure: int = 0
    kept: int = 0  # expired leases whose job still waits in the queue: extended, place kept
    backpressure: bool = False
    budget_exhausted: bool = False
    duration_ms: int = 0
    error: str | None = None

    @classmethod
    def starting(cls, mode: str, now: datetime, **counts: Any) -> DispatchSummary:
        return cls(mode=mode, now=utc_text(now), **counts)

    def count_run(self, status: RunStatus) -> None:
        self.ran += 1
        if status is RunStatus.SUCCEEDED:
            self.succeeded += 1
        elif status is RunStatus.FAILED:
            self.failed += 1

    def line(self) -> str:
        parts = [f"dispatch at={self.now} mode={self.mode}", f"claimed={self.claimed}"]
        if self.mode == "queue":
            parts.append(f"enqueued={self.enqueued}")
        else:
            parts += [f"ran={self.ran}", f"succeeded={self.succeeded}", f"failed={self.failed}"]
        parts += [f"released={self.released}", f"skipped_backpressure={self.skipped_backpressure}"]
        if self.kept:
            parts.append(f"kept={self.kept}")
        if self.backpressure:
            parts.append("backpressure=yes")
        if self.budget_exhausted:
            parts.append("budget_exhausted=yes")
        parts.append(f"duration_ms={self.duration_ms}")
        if self.error:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def truncate_error(text: str | None, limit: int = ERROR_TEXT_LIMIT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 15] + " …[truncated]"
