"""The two tables. Column names are camelCase on purpose: operators type SQL against them by hand.

UserMonitorSchedule: one row per user; `nextRunAt` is the indexed due time. While a run is in
flight the row holds a lease (`lockedBy` token, `lockedUntil` expiry) and `nextRunAt` is moved to the
lease expiry, out of the due range: claimed rows are never rescanned, and a run that is lost comes
due again by itself when its lease runs out. `runSlot`/`attempt` name the run in flight (or the last
one), so a retried slot is told apart from a new one.

UserMonitorRun: one row per run, written when the run ends (or is found lost/skipped).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql

metadata = MetaData()

# DATETIME(3) on MySQL/MariaDB; SQLite stores the ISO text SQLAlchemy writes.
Millis = DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
# Exact, case-sensitive user ids on MySQL ("Alice" and "alice" are two users).
UserIdType = String(64).with_variant(mysql.VARCHAR(64, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")
ErrorText = Text().with_variant(mysql.TEXT(charset="utf8mb4"), "mysql", "mariadb")

MYSQL_TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

schedules = Table(
    "UserMonitorSchedule",
    metadata,
    Column("userId", UserIdType, primary_key=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("intervalMinutes", Integer, nullable=False),
    Column("nextRunAt", Millis, nullable=False),
    Column("lastRunAt", Millis, nullable=True),
    Column("lastStatus", String(16), nullable=True),
    Column("lastError", ErrorText, nullable=True),
    Column("lockedUntil", Millis, nullable=True),
    Column("lockedBy", String(64), nullable=True),
    Column("runSlot", Millis, nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("createdAt", Millis, nullable=False),
    Column("updatedAt", Millis, nullable=False),
    CheckConstraint("intervalMinutes BETWEEN 1 AND 1440", name="ck_UserMonitorSchedule_interval"),
    # The due query is `enabled = 1 AND nextRunAt <= now ORDER BY nextRunAt`: an index range scan in
    # ORDER BY order, so SKIP LOCKED locks only the rows it returns (no filesort).
    Index("ix_UserMonitorSchedule_due", "enabled", "nextRunAt"),
    Index("ix_UserMonitorSchedule_lockedUntil", "lockedUntil"),
    **MYSQL_TABLE_OPTIONS,
)

runs = Table(
    "UserMonitorRun",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("userId", UserIdType, nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("slot", Millis, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("leaseToken", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("error", ErrorText, nullable=True),
    Column("skippedSlots", Integer, nullable=False, default=0),
    Column("enqueuedAt", Millis, nullable=True),
    Column("startedAt", Millis, nullable=True),
    Column("finishedAt", Millis, nullable=False),
    Column("durationMs", Integer, nullable=True),
    Column("worker", String(128), nullable=True),
    Index("ix_UserMonitorRun_user", "userId", "id"),
    Index("ix_UserMonitorRun_finishedAt", "finishedAt"),
    **MYSQL_TABLE_OPTIONS,
)

# Liveness facts shared by every process, one row per key ("dispatch": the last successful pass).
# `monitor-scheduler check`, /readyz and /metrics read it to notice a dispatcher that silently stopped.
status = Table(
    "SchedulerStatus",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("at", Millis, nullable=True),
    Column("detail", ErrorText, nullable=True),
    **MYSQL_TABLE_OPTIONS,
)
