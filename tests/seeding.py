"""Test data for the test suite and the benchmarks: migrated databases and schedule rows.

One home for both, so a schema change is made once: the tests and the benchmarks (scripts/bench/)
import it as `tests.seeding`, like tests/servers.py (one module name, so mypy can check it; it was
`seeding` to the benchmarks and `scripts.bench.seeding` to the tests, one file under two names).
It writes through the project's own migrations and `writes.insert_schedules`, never its own SQL.
(Bulk seeding of a million rows on MariaDB stays in scripts/bench/common.py: that is the server's
INSERT ... SELECT, not rows from Python.)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, update

from core import writes
from core.db import create_db_engine
from schema.migrate import upgrade
from schema.models import schedules

INSERT_CHUNK = 5_000  # rows per INSERT statement


def migrated(url: str) -> str:
    """Apply the migrations to the (empty) database at `url`; returns `url`."""
    engine = create_db_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


class DatabaseServer(Protocol):
    """What this needs of a tests/servers.py MariaDB handle."""

    def create_database(self, name: str) -> str: ...


def new_mariadb_database(mariadb: DatabaseServer, name: str) -> str:
    """Create database `name` on a MariaDB server handle and migrate it; returns its URL."""
    return migrated(mariadb.create_database(name))


def add_schedules(
    conn: Connection, user_ids: Sequence[str], *, due_at: datetime, interval: int = 5, spread_ms: int = 0, enabled: bool = True
) -> None:
    """Insert one schedule per user id on the SQLAlchemy connection `conn` (its transaction): the
    i-th is due at `due_at` + i * `spread_ms` milliseconds, all created at `due_at`."""
    rows = [
        {
            "userId": user_id, "enabled": enabled, "intervalMinutes": interval,
            "nextRunAt": due_at + timedelta(milliseconds=i * spread_ms), "attempt": 0,
            "createdAt": due_at, "updatedAt": due_at,
        }
        for i, user_id in enumerate(user_ids)
    ]
    for start in range(0, len(rows), INSERT_CHUNK):
        writes.insert_schedules(conn, rows[start : start + INSERT_CHUNK])


def pause(conn: Connection, user_id: str, *, at: datetime, reason: str = "paused after 3 consecutive failed slots; last error: down",
          failed_slots: int = 3) -> None:
    """Pause a schedule by hand, as the run outcome path does after failed slots: paused, since
    `at`, why (one statement for all three databases)."""
    conn.execute(
        update(schedules).where(schedules.c.userId == user_id)
        .values(paused=True, pausedAt=at, pausedReason=reason, failedSlots=failed_slots)
    )
