"""Stop requests, noted: a task's own SystemExit is told apart from the operator's Ctrl-C or SIGTERM
(core.shutdown). Mixed into every worker class: the simple and fork ones (worker.pool) and the
threaded one (worker.threaded)."""

from __future__ import annotations

from types import FrameType

from rq.worker import BaseWorker
from typing_extensions import override

from core import shutdown


class NotesStopRequests(BaseWorker):
    """Notes RQ's stop requests (core.shutdown) before RQ handles them: a task's own SystemExit is
    then told apart from the operator's Ctrl-C or SIGTERM."""

    @override
    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        shutdown.request()
        super().request_stop(signum, frame)

    @override
    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        shutdown.request()
        super().request_force_stop(signum, frame)
