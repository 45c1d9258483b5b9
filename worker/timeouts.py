"""JOB_TIMEOUT on the default worker classes (rq.SimpleWorker, rq.Worker's fork-per-job horse).

RQ's own death penalty (SIGALRM, `UnixSignalDeathPenalty`) raises `JobTimeoutException` wherever
the job's thread happens to be. Ours, plugged in through RQ's `death_penalty_class` seam
(worker.pool), raises `JobTimedOut` instead, which the executor recognises (core's `RunTimedOut`):

- in a sync task, the task is interrupted; in an async task, the thread waiting for it is, and the
  executor cancels the coroutine on the event loop;
- the executor records the run failed (timeout) through its fenced finish, then re-raises, so RQ
  fails the job (it is not recorded finished);
- an alarm that arrives while the run's outcome is being written (the task has returned) is
  ignored: the write completes and the job ends as the task did.

Other uses of the class by RQ (the fork worker's wait for its horse, callbacks) keep RQ's
behaviour: the exception RQ asked for.
"""

from __future__ import annotations

import logging
from types import FrameType
from typing import Any

from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from typing_extensions import override

from core.exceptions import RunTimedOut
from core.executor import finishing_here

logger = logging.getLogger(__name__)


class JobTimedOut(RunTimedOut, JobTimeoutException):
    """RQ's job timeout, in a shape the executor recognises."""


class RunDeathPenalty(UnixSignalDeathPenalty):
    """SIGALRM at the job's timeout, raising `JobTimedOut` into the run (see the module)."""

    def __init__(self, timeout: Any, exception: type[BaseException] = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, exception, **kwargs)
        self.seconds = timeout
        self.for_job = issubclass(JobTimedOut, exception)  # the job's own timeout, not a horse wait

    @override
    def handle_death_penalty(self, signum: int, frame: FrameType | None) -> None:
        if not self.for_job:
            super().handle_death_penalty(signum, frame)
            return
        if finishing_here():
            logger.warning("job timeout (%s s) reached while its run's outcome is being written: letting it finish", self.seconds)
            return
        raise JobTimedOut(f"Task exceeded maximum timeout value ({self.seconds} seconds)")
