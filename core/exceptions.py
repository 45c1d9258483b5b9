"""Every exception the project raises on purpose, in one place.

Driver errors (SQLAlchemy, redis-py) are translated into these at the boundary so that the CLI and
web layers can turn them into one clear line and an exit code instead of a traceback.
"""

from __future__ import annotations

from datetime import datetime

from core.domain import DispatchSummary


class MonitorSchedulerError(Exception):
    """Base class for the project's own errors; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigurationError(MonitorSchedulerError):
    """A setting from the environment or .env is missing or invalid."""

    exit_code = 2


class InvalidInput(MonitorSchedulerError):
    """Input from a user or operator was rejected before anything was written."""

    exit_code = 2


class UnknownUser(MonitorSchedulerError):
    """No schedule exists for the given user id."""

    exit_code = 2


class LeaseHeld(MonitorSchedulerError):
    """A run of this user holds a live lease, so another run may not start now."""

    exit_code = 3

    def __init__(self, message: str, *, until: datetime | None = None, queued: bool = False) -> None:
        super().__init__(message)
        self.until = until  # when the lease ends (naive UTC): what may be shown to the user
        self.queued = queued  # the run waits in the queue (not started yet)


class RunNowTooSoon(MonitorSchedulerError):
    """A user asked for a manual run again within RUN_NOW_COOLDOWN; `retry_after` is in seconds."""

    exit_code = 3  # like LeaseHeld: not now (the CLI's runs are exempt and never see it)

    def __init__(self, message: str, *, retry_after: int, cooldown: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # whole seconds until the next request is admitted (at least 1)
        self.cooldown = cooldown  # RUN_NOW_COOLDOWN, seconds


class QueueUnavailable(MonitorSchedulerError):
    """Redis could not be reached or failed while jobs were being enqueued."""

    exit_code = 1


class DispatchFailed(QueueUnavailable):
    """A dispatch pass (or direct run) stopped part-way because the queue failed; `summary` says
    what it did before (its unenqueued leases were released)."""

    exit_code = 1

    def __init__(self, message: str, summary: DispatchSummary) -> None:
        super().__init__(message)
        self.summary = summary


class TaskImportError(MonitorSchedulerError):
    """MONITOR_TASK does not name an importable callable."""

    exit_code = 2


class PermanentError(Exception):
    """Raised by a task: its run fails and is not retried (a deleted site, revoked credentials).
    Tasks import it from core.tasks (or `monitor_scheduler`)."""


class RunTimedOut(Exception):
    """A run passed JOB_TIMEOUT while its task ran (raised into the task's thread by a worker's
    timeout, e.g. RQ's SIGALRM): the executor records the run failed (timeout), then re-raises."""


class TaskExited(Exception):
    """An async task raised SystemExit or KeyboardInterrupt on the shared event loop; carried back
    to its run as this (`original`), so that it cannot stop the loop every async run shares."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original
