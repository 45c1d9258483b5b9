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
    Float,
    Index,
    Integer,
    MetaData,
    String,
    TIMESTAMP,
    Table,
    Text,
    column,
    false,
    text,
    true,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

metadata = MetaData()


class PostgresMillis(TIMESTAMP):
    """`timestamp(3) without time zone`, named without importing SQLAlchemy's PostgreSQL dialect:
    this module is imported by every process, and that dialect's import alone added ~3 MB to
    each one on SQLite and MariaDB (docs/performance.md, benchmark 9)."""

    cache_ok = True


@compiles(PostgresMillis, "postgresql")
def _postgres_millis(_type: PostgresMillis, _compiler: Any, **_kw: Any) -> str:
    return "TIMESTAMP(3) WITHOUT TIME ZONE"


# DATETIME(3) on MySQL/MariaDB, `timestamp(3) without time zone` on PostgreSQL (naive UTC, like the
# code's values); SQLite stores the ISO text SQLAlchemy writes.
Millis = DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb").with_variant(PostgresMillis(), "postgresql")
# Exact, case-sensitive user ids on MySQL ("Alice" and "alice" are two users), and NO PAD: with a
# PAD SPACE collation such as utf8mb4_bin, 'alice ' = 'alice'. MariaDB's name is utf8mb4_nopad_bin;
# migration 0003 picks MySQL 8's utf8mb4_0900_bin on MySQL (the collation is not compared by
# tests/integration/test_schema.py's models-vs-migrations check, so both servers agree with this).
# PostgreSQL: varchar never pads (trailing spaces always count), and the "C" collation compares and
# orders the bytes: no case folding even if the database's default collation is a nondeterministic
# ICU one, the order of MariaDB's binary collation (code points), LIKE 'prefix%' can use the index,
# and no libc collation update can silently reorder (corrupt) the primary key's index.
USER_ID_COLLATION = "utf8mb4_nopad_bin"
POSTGRES_USER_ID_COLLATION = "C"
UserIdType = (
    String(64)
    .with_variant(mysql.VARCHAR(64, charset="utf8mb4", collation=USER_ID_COLLATION), "mysql", "mariadb")
    .with_variant(String(64, collation=POSTGRES_USER_ID_COLLATION), "postgresql")
)
ErrorText = Text().with_variant(mysql.TEXT(charset="utf8mb4"), "mysql", "mariadb")
MessageType = String(255).with_variant(mysql.VARCHAR(255, charset="utf8mb4"), "mysql", "mariadb")



class utc_now_ms(FunctionElement[Any]):
    """Server default "now": naive UTC with milliseconds, in the form the code writes and reads
    (MySQL DATETIME(3); PostgreSQL timestamp(3), the statement's time as core.clock reads it;
    SQLite the ISO text 'YYYY-MM-DD HH:MM:SS.ffffff' SQLAlchemy parses)."""

    type = DateTime()
    inherit_cache = True


@compiles(utc_now_ms)
def _utc_now_sqlite(_element: utc_now_ms, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "(strftime('%Y-%m-%d %H:%M:%f000', 'now'))"


@compiles(utc_now_ms, "mysql")
@compiles(utc_now_ms, "mariadb")
def _utc_now_mysql(_element: utc_now_ms, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "(UTC_TIMESTAMP(3))"


@compiles(utc_now_ms, "postgresql")
def _utc_now_postgresql(_element: utc_now_ms, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "(date_trunc('milliseconds', statement_timestamp() AT TIME ZONE 'UTC'))"


MYSQL_TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

schedules = Table(
    "UserMonitorSchedule",
    metadata,
    Column("userId", UserIdType, primary_key=True),
    # Server defaults (migration 0003) let a host insert with plain SQL: `INSERT INTO
    # UserMonitorSchedule (userId) VALUES ('alice')` is an enabled 5-minute schedule, due at once.
    # (true(): 1 on SQLite, TRUE on MySQL and PostgreSQL, whose boolean takes no integer default.)
    Column("enabled", Boolean, nullable=False, default=True, server_default=true()),
    Column("intervalMinutes", Integer, nullable=False, server_default=text("5")),
    Column("nextRunAt", Millis, nullable=False, server_default=utc_now_ms()),
    Column("lastRunAt", Millis, nullable=True),
    Column("lastStatus", String(16), nullable=True),
    Column("lastError", ErrorText, nullable=True),
    Column("lockedUntil", Millis, nullable=True),
    Column("lockedBy", String(64), nullable=True),
    Column("runSlot", Millis, nullable=True),
    Column("attempt", Integer, nullable=False, default=0, server_default=text("0")),
    Column("createdAt", Millis, nullable=False, server_default=utc_now_ms()),
    Column("updatedAt", Millis, nullable=False, server_default=utc_now_ms()),
    # Long runs (migration 0004): when a worker really started the run in flight (NULL while its
    # job waits in the queue), and the run's last reported progress, written fenced on the lease.
    Column("runStartedAt", Millis, nullable=True),
    Column("progress", Float, nullable=True),
    Column("progressMessage", MessageType, nullable=True),
    Column("progressAt", Millis, nullable=True),
    # When the user's own "Run now" last claimed a run (migration 0005): the cooldown's clock,
    # written by that claim (core.claims.claim_user); operators' runs leave it alone.
    Column("manualRunAt", Millis, nullable=True),
    # Calendar schedules (migration 0007): NULL cronExpr is an interval schedule (every row before,
    # and plain-SQL inserts); otherwise a 5-field expression read in timeZone (core/calendar.py),
    # started up to spreadSeconds late by a stable per-user offset. nextRunAt stays the UTC slot.
    Column("cronExpr", String(100), nullable=True),
    Column("timeZone", String(64), nullable=False, server_default=text("'UTC'")),
    Column("spreadSeconds", Integer, nullable=False, server_default=text("0")),
    # When a run fails (migration 0008): retries within the slot and their backoff, and the pause
    # after `pauseAfter` consecutive failed slots; NULL takes the settings default (core.settings).
    Column("retries", Integer, nullable=True),
    Column("retryBackoffSeconds", Integer, nullable=True),
    Column("pauseAfter", Integer, nullable=True),  # 0: never pause this schedule
    Column("failedSlots", Integer, nullable=False, server_default=text("0")),  # consecutive failed slots
    # The slot in runSlot failed and waits for its retry at nextRunAt: the claim that takes the row
    # runs that slot again as attempt + 1 (core.claims' slot/attempt rule), and clears it.
    Column("retrying", Boolean, nullable=False, server_default=false()),
    # Paused is a state of its own (not a far-future nextRunAt), excluded by the claim like a
    # disabled row; the user or an admin resumes it.
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("pausedAt", Millis, nullable=True),
    Column("pausedReason", ErrorText, nullable=True),
    # Expressions, not SQL text: the camelCase names are quoted per dialect (PostgreSQL folds an
    # unquoted intervalMinutes to intervalminutes).
    CheckConstraint(column("intervalMinutes").between(1, 1440), name="ck_UserMonitorSchedule_interval"),
    CheckConstraint(column("spreadSeconds").between(0, 86400), name="ck_UserMonitorSchedule_spread"),
    CheckConstraint(column("retries").between(0, 10), name="ck_UserMonitorSchedule_retries"),
    CheckConstraint(column("retryBackoffSeconds").between(1, 86400), name="ck_UserMonitorSchedule_retryBackoff"),
    CheckConstraint(column("pauseAfter").between(0, 1000), name="ck_UserMonitorSchedule_pauseAfter"),
    # The due query is `enabled = 1 AND paused = 0 AND nextRunAt <= now ORDER BY nextRunAt`: an
    # index range scan in ORDER BY order, so SKIP LOCKED locks only the rows it returns (no
    # filesort), and paused rows are never scanned.
    Index("ix_UserMonitorSchedule_due", "enabled", "paused", "nextRunAt"),
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
    Column("progressMessage", MessageType, nullable=True),  # the last progress message of the run
    Column("result", ErrorText, nullable=True),  # the task's returned JSON, <= 4 KB (migration 0008)
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

# The jti of every sign-in token already used (stored as its SHA-256 hex), kept until the token would
# have expired anyway: one-time links stay one-time across restarts and web processes. Only
# core.sessions touches this table and the next.
used_sign_in_tokens = Table(
    "UsedSignInToken",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expiresAt", Millis, nullable=False),
    Index("ix_UsedSignInToken_expiresAt", "expiresAt"),
    **MYSQL_TABLE_OPTIONS,
)

# One row per signed-in browser. `id` is the SHA-256 hex of the secret the cookie carries (a leaked
# table cannot be replayed as cookies); every request reads its row, so deleting it or setting
# `revokedAt` ends the session everywhere on the next request.
web_sessions = Table(
    "WebSession",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("userId", UserIdType, nullable=False),
    Column("isAdmin", Boolean, nullable=False),
    Column("createdAt", Millis, nullable=False),
    Column("expiresAt", Millis, nullable=False),
    Column("revokedAt", Millis, nullable=True),
    Index("ix_WebSession_userId", "userId"),
    Index("ix_WebSession_expiresAt", "expiresAt"),
    **MYSQL_TABLE_OPTIONS,
)

# One row per user ever signed out everywhere (migration 0006): Bearer tokens are not stored, so
# "sign out everywhere" refuses those of the user issued (`iat`) before `signedOutAt` (or, with
# `admin: true`, before `adminSignedOutAt`). One primary-key read per Bearer request.
web_sign_outs = Table(
    "WebSignOut",
    metadata,
    Column("userId", UserIdType, primary_key=True),
    Column("signedOutAt", Millis, nullable=True),
    Column("adminSignedOutAt", Millis, nullable=True),
    **MYSQL_TABLE_OPTIONS,
)

# One row per dispatch pass (migration 0004): the backlog and the capacity at that moment, for the
# admin page's chart and `check`'s "demand above capacity for too long". Pruned by age.
samples = Table(
    "SchedulerSample",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", Millis, nullable=False),
    Column("due", Integer, nullable=False),
    Column("queued", Integer, nullable=False),
    Column("running", Integer, nullable=False),
    Column("demand", Float, nullable=False),  # concurrency the schedules need (runs at once)
    Column("capacity", Integer, nullable=True),  # concurrency available (NULL: unknown, sync mode)
    Index("ix_SchedulerSample_at", "at"),
    **MYSQL_TABLE_OPTIONS,
)
