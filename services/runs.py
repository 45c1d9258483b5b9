"""Runs: run one user now, a dispatch pass, the run history, releasing expired leases, pruning.

Passes and direct runs go through the entry layer's dispatchers (one per mode, built once), so
this module never assembles a dispatcher, an engine or a Redis client itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from core import claims, queries, writes
from core.clock import Clock
from core.domain import DispatchSummary, Mode, RunRecord
from core.exceptions import InvalidInput
from core.retry import RetryDefaults
from core.scheduling import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS
from core.settings import Settings
from dispatcher.service import Dispatcher
from services.schedules import Schedules, Snapshot

HISTORY_LIMIT = 20
PRUNE_BATCH = 5000


class Runs:
    def __init__(self, settings: Settings, engine: Engine, clock: Clock, dispatcher: Callable[[Mode], Dispatcher], schedules: Schedules) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.dispatcher = dispatcher
        self.schedules = schedules

    def run_now(self, user_id: str, mode: Mode | None = None, *, cooldown: bool = False) -> tuple[DispatchSummary, Snapshot]:
        """Direct mode (default: Settings.default_mode), then the schedule as it is after the run
        was queued or ran. Raises UnknownUser/LeaseHeld, and with `cooldown` RunNowTooSoon.

        `cooldown`: a user's own request ("Run now" on the settings page or the API), admitted
        once per RUN_NOW_COOLDOWN seconds. Operators (the CLI, the admin page and API, the cron
        endpoint) are exempt: they act on purpose, and the lease still keeps a second run from
        starting beside a live one."""
        seconds = self.settings.RUN_NOW_COOLDOWN if cooldown else 0
        summary = self.dispatcher(mode or self.settings.default_mode).run_user_now(
            user_id, cooldown=timedelta(seconds=seconds) if seconds else None,
        )
        return summary, self.schedules.read(user_id)

    def dispatch_pass(self, mode: Mode | None = None) -> DispatchSummary:
        return self.dispatcher(mode or self.settings.default_mode).tick()

    def history(self, user_id: str | None, limit: int = HISTORY_LIMIT) -> list[RunRecord]:
        """The newest runs first, of one user or of everyone."""
        with self.engine.connect() as conn:
            return queries.recent_runs(conn, user_id=user_id, limit=limit)

    def unlock_expired(self) -> list[str]:
        with self.engine.begin() as conn:
            return claims.unlock_expired(conn, now=self.clock.now(conn), defaults=RetryDefaults.from_settings(self.settings))

    def prune_history(self, days: int | None = None) -> tuple[int, datetime]:
        """Delete history older than `days` (HISTORY_RETENTION_DAYS) in short transactions."""
        if days is not None and not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS:  # 0 or less: everything
            raise InvalidInput(f"days must be from {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}, got {days}")
        return self._prune(lambda conn, cutoff: writes.prune_runs(conn, finished_before=cutoff, batch=PRUNE_BATCH),
                           self.settings.HISTORY_RETENTION_DAYS if days is None else days)

    def prune_samples(self) -> tuple[int, datetime]:
        """Delete capacity samples older than CAPACITY_SAMPLE_RETENTION days, in short transactions."""
        return self._prune(lambda conn, cutoff: writes.prune_samples(conn, taken_before=cutoff, batch=PRUNE_BATCH),
                           self.settings.CAPACITY_SAMPLE_RETENTION)

    def _prune(self, delete_batch: Callable[[Connection, datetime], int], days: int) -> tuple[int, datetime]:
        """Batches of `delete_batch` until one deletes nothing, each its own short transaction."""
        with self.engine.connect() as conn:
            cutoff = self.clock.now(conn) - timedelta(days=days)
        total = 0
        while True:
            with self.engine.begin() as conn:
                deleted = delete_batch(conn, cutoff)
            total += deleted
            if deleted == 0:
                return total, cutoff
