"""Schedules with leases, and run history.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A migration is a frozen snapshot: these types are spelled out here, not imported from
# schema.models, so later model changes cannot rewrite history. tests/unit/test_schema.py checks
# that models and migrations agree.
MILLIS = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb").with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")
# PostgreSQL (added later, dialect bits only): userId in the "C" collation from the start (exact, byte order).
USER_ID = (
    sa.String(64)
    .with_variant(mysql.VARCHAR(64, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")
    .with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")
)
ERROR_TEXT = sa.Text().with_variant(mysql.TEXT(charset="utf8mb4"), "mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def _interval_check() -> str:
    # PostgreSQL folds unquoted names to lower case: the camelCase column must be quoted there
    # (MySQL and SQLite keep the text they always had).
    if op.get_context().dialect.name == "postgresql":
        return '"intervalMinutes" BETWEEN 1 AND 1440'
    return "intervalMinutes BETWEEN 1 AND 1440"


def upgrade() -> None:
    op.create_table(
        "UserMonitorSchedule",
        sa.Column("userId", USER_ID, primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("intervalMinutes", sa.Integer(), nullable=False),
        sa.Column("nextRunAt", MILLIS, nullable=False),
        sa.Column("lastRunAt", MILLIS, nullable=True),
        sa.Column("lastStatus", sa.String(16), nullable=True),
        sa.Column("lastError", ERROR_TEXT, nullable=True),
        sa.Column("lockedUntil", MILLIS, nullable=True),
        sa.Column("lockedBy", sa.String(64), nullable=True),
        sa.Column("runSlot", MILLIS, nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("createdAt", MILLIS, nullable=False),
        sa.Column("updatedAt", MILLIS, nullable=False),
        sa.CheckConstraint(_interval_check(), name="ck_UserMonitorSchedule_interval"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_UserMonitorSchedule_due", "UserMonitorSchedule", ["enabled", "nextRunAt"])
    op.create_index("ix_UserMonitorSchedule_lockedUntil", "UserMonitorSchedule", ["lockedUntil"])

    op.create_table(
        "UserMonitorRun",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("userId", USER_ID, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("slot", MILLIS, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("leaseToken", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", ERROR_TEXT, nullable=True),
        sa.Column("skippedSlots", sa.Integer(), nullable=False),
        sa.Column("enqueuedAt", MILLIS, nullable=True),
        sa.Column("startedAt", MILLIS, nullable=True),
        sa.Column("finishedAt", MILLIS, nullable=False),
        sa.Column("durationMs", sa.Integer(), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_UserMonitorRun_user", "UserMonitorRun", ["userId", "id"])
    op.create_index("ix_UserMonitorRun_finishedAt", "UserMonitorRun", ["finishedAt"])


def downgrade() -> None:
    op.drop_table("UserMonitorRun")
    op.drop_table("UserMonitorSchedule")
