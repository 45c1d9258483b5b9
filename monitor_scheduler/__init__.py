"""monitor-scheduler. A task may `raise monitor_scheduler.PermanentError(...)`: its run fails and
is not retried (core.tasks)."""

from core.exceptions import PermanentError

__all__ = ["PermanentError"]
