"""The jobs the dispatcher puts on the RQ queue and the worker runs: their import paths, and the
arguments of a run job, encoded and decoded here and nowhere else.

RQ calls a job function by its import path, and the dispatcher may not import the worker (layers),
so the dispatcher names the worker's functions by string. tests/unit/test_jobspec.py imports each
named function and binds the encoded arguments to its signature, so a renamed function or a
reordered parameter fails a fast test instead of a worker at run time.
"""

from __future__ import annotations

from datetime import datetime

from core.clock import epoch_ms, from_epoch_ms
from core.domain import ClaimedRun, Trigger

RUN_JOB = "worker.jobs.run_user_monitor"  # one user's run (what a pass enqueues)
PASS_JOB = "worker.jobs.dispatch_pass"  # one dispatch pass (what rq-scheduler's tick enqueues)

# The run job's parameters, in the order run_job_args() encodes them.
RUN_JOB_PARAMETERS = ("user_id", "slot_ms", "attempt", "token", "trigger", "enqueued_ms")

RunJobArgs = tuple[str, int, int, str, str, int]


def run_job_args(run: ClaimedRun) -> RunJobArgs:
    """The positional arguments of the run job for `run` (times as epoch milliseconds)."""
    return (run.user_id, epoch_ms(run.slot), run.attempt, run.token, str(run.trigger), epoch_ms(run.claimed_at))


def run_from_job_args(
    user_id: str, slot_ms: int, attempt: int, token: str, trigger: str = "schedule", enqueued_ms: int | None = None,
) -> tuple[ClaimedRun, datetime | None]:
    """The run a run job carries, and when it was enqueued (None for jobs of releases that did not
    send it: the defaults keep such jobs runnable)."""
    enqueued_at = from_epoch_ms(enqueued_ms) if enqueued_ms is not None else None
    slot = from_epoch_ms(slot_ms)
    return ClaimedRun(user_id, slot, attempt, token, Trigger(trigger), enqueued_at or slot), enqueued_at
