"""The third way to tick: rq-scheduler runs the dispatch pass, for hosts with Redis but no crontab.

`monitor-scheduler tick install` registers `worker.jobs.dispatch_pass` (dispatcher.jobspec.PASS_JOB)
as an rq-scheduler cron job (croniter syntax, default every minute) under one fixed id, so installing twice leaves one entry;
the `rqscheduler` process enqueues it when due (at the front of the queue, so a backlog of user
jobs cannot delay the pass that feeds them) and an RQ worker runs it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime

from croniter import croniter
from redis import Redis
from rq_scheduler import Scheduler

from core.exceptions import InvalidInput
from dispatcher.jobspec import PASS_JOB

TICK_JOB_ID = "monitor-scheduler-dispatch-tick"
DEFAULT_CRON = "* * * * *"


@dataclass(frozen=True)
class TickStatus:
    installed: bool
    cron: str | None
    next_run: datetime | None


def _scheduler(connection: Redis, queue_name: str) -> Scheduler:
    return Scheduler(queue_name=queue_name, connection=connection)


def install(connection: Redis, queue_name: str, *, cron: str = DEFAULT_CRON, timeout: int = 300) -> TickStatus:
    if not croniter.is_valid(cron):
        raise InvalidInput(f"not a cron expression: {cron!r} (five fields, e.g. '* * * * *')")
    scheduler = _scheduler(connection, queue_name)
    scheduler.cancel(TICK_JOB_ID)  # replace, never add a second entry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # croniter's naive-datetime notice
        scheduler.cron(
            cron, func=PASS_JOB, id=TICK_JOB_ID, queue_name=queue_name, at_front=True,
            timeout=timeout, result_ttl=600, use_local_timezone=False,
            description=f"monitor-scheduler dispatch pass ({cron})",
        )
    return status(connection, queue_name)


def uninstall(connection: Redis, queue_name: str) -> bool:
    scheduler = _scheduler(connection, queue_name)
    was_installed = TICK_JOB_ID in scheduler
    scheduler.cancel(TICK_JOB_ID)
    return was_installed


def status(connection: Redis, queue_name: str) -> TickStatus:
    scheduler = _scheduler(connection, queue_name)
    for job, when in scheduler.get_jobs(with_times=True):
        if job.id == TICK_JOB_ID:
            return TickStatus(True, job.meta.get("cron_string"), when)
    return TickStatus(False, None, None)
