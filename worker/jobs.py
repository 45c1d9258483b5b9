"""RQ job functions: thin, at module top level, taking ids and reloading state.

`worker.jobs.run_user_monitor` is what the dispatcher enqueues. Everything it needs beyond the
identifiers of the run comes from the database, through the same executor that sync mode uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rq import get_current_job

from core.clock import from_epoch_ms
from core.domain import ClaimedRun, Trigger
from worker import context


def run_user_monitor(user_id: str, slot_ms: int, attempt: int, token: str, trigger: str = "schedule", enqueued_ms: int | None = None) -> str:
    """Run one user's monitor for the slot whose lease `token` holds; returns the run's status."""
    job = get_current_job()
    runner = context.get_runner(worker_name=job.worker_name if job is not None else None)
    run, enqueued_at = claimed_run(user_id, slot_ms, attempt, token, trigger, enqueued_ms)
    return runner.execute(run, enqueued_at=enqueued_at).status.value


def claimed_run(
    user_id: str, slot_ms: int, attempt: int, token: str, trigger: str = "schedule", enqueued_ms: int | None = None,
) -> tuple[ClaimedRun, datetime | None]:
    """The run a `run_user_monitor` job carries (its arguments), and when it was enqueued."""
    enqueued_at = from_epoch_ms(enqueued_ms) if enqueued_ms is not None else None
    return ClaimedRun(user_id, from_epoch_ms(slot_ms), attempt, token, Trigger(trigger), enqueued_at or from_epoch_ms(slot_ms)), enqueued_at


def dispatch_pass() -> dict[str, Any]:
    """One dispatch pass in queue mode: what rq-scheduler's tick job runs (see dispatcher.tick)."""
    return context.get_context().queue_dispatcher.tick().as_dict()
