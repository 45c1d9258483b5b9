"""RQ job functions: thin, at module top level, taking ids and reloading state.

Their import paths and the run job's arguments are dispatcher.jobspec's (the one place that
encodes and decodes them). Everything a run needs beyond the identifiers of the run comes from the
database, through the same executor that sync mode uses.
"""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from dispatcher.jobspec import run_from_job_args
from worker import context


def run_user_monitor(user_id: str, slot_ms: int, attempt: int, token: str, trigger: str = "schedule", enqueued_ms: int | None = None) -> str:
    """Run one user's monitor for the slot whose lease `token` holds; returns the run's status."""
    job = get_current_job()
    runner = context.get_runner(worker_name=job.worker_name if job is not None else None)
    run, enqueued_at = run_from_job_args(user_id, slot_ms, attempt, token, trigger, enqueued_ms)
    return runner.execute(run, enqueued_at=enqueued_at).status.value


def dispatch_pass() -> dict[str, Any]:
    """One dispatch pass in queue mode: what rq-scheduler's tick job runs (see dispatcher.tick)."""
    return context.get_context().queue_dispatcher.tick().as_dict()
