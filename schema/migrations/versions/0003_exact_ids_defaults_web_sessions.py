"""Exact user ids, server defaults for plain-SQL inserts, used sign-in tokens and web sessions.

- userId compares exactly on MySQL/MariaDB: utf8mb4_bin is a PAD SPACE collation ('alice ' =
  'alice'); the NO PAD binary collation is utf8mb4_nopad_bin on MariaDB and utf8mb4_0900_bin on
  MySQL 8, picked per server (offline, for schema/mysql.sql: MariaDB's).
- Every UserMonitorSchedule column beyond userId has a server default, so a host or an operator can
  `INSERT INTO UserMonitorSchedule (userId) VALUES ('alice')` and the row is due at once.
- UsedSignInToken: the jti (SHA-256) of each sign-in token already used, shared by every web
  process and kept across restarts; the INSERT that hits the primary key is the claim.
- WebSession: one row per signed-in browser; the cookie carries only the session's secret.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql, postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MILLIS = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb").with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}
MARIADB_NOPAD_BIN, MYSQL_NOPAD_BIN, OLD_BIN = "utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin"


def _is_mariadb() -> bool:
    if context.is_offline_mode():
        return True
    return bool(getattr(op.get_bind().dialect, "is_mariadb", False))


def _user_id(collation: str) -> sa.types.TypeEngine:
    return (
        sa.String(64)
        .with_variant(mysql.VARCHAR(64, charset="utf8mb4", collation=collation), "mysql", "mariadb")
        .with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")  # exact already since 0001
    )


def _utc_now() -> sa.TextClause:
    """Now as naive UTC with milliseconds, as the code writes it (SQLite: the ISO text SQLAlchemy
    reads back, 'YYYY-MM-DD HH:MM:SS.ffffff')."""
    if op.get_context().dialect.name == "sqlite":
        return sa.text("(strftime('%Y-%m-%d %H:%M:%f000', 'now'))")
    if op.get_context().dialect.name == "postgresql":
        return sa.text("(date_trunc('milliseconds', statement_timestamp() AT TIME ZONE 'UTC'))")
    return sa.text("(UTC_TIMESTAMP(3))")


def _true() -> sa.TextClause:
    """PostgreSQL's boolean takes no integer default; MySQL and SQLite keep their 1."""
    return sa.text("true") if op.get_context().dialect.name == "postgresql" else sa.text("1")


def upgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    postgres = op.get_context().dialect.name == "postgresql"
    nopad = _user_id(MARIADB_NOPAD_BIN if _is_mariadb() else MYSQL_NOPAD_BIN)
    old = _user_id(OLD_BIN)
    now = _utc_now()

    with op.batch_alter_table("UserMonitorSchedule") as batch:
        if not postgres:  # PostgreSQL's userId is exact since 0001 ("C" collation, varchar never pads)
            batch.alter_column("userId", type_=nopad, existing_type=old, nullable=False)
        batch.alter_column("enabled", existing_type=sa.Boolean(), nullable=False, server_default=_true())
        batch.alter_column("intervalMinutes", existing_type=sa.Integer(), nullable=False, server_default=sa.text("5"))
        batch.alter_column("nextRunAt", existing_type=MILLIS, nullable=False, server_default=now)
        batch.alter_column("attempt", existing_type=sa.Integer(), nullable=False, server_default=sa.text("0"))
        batch.alter_column("createdAt", existing_type=MILLIS, nullable=False, server_default=now)
        batch.alter_column("updatedAt", existing_type=MILLIS, nullable=False, server_default=now)
    if not sqlite and not postgres:  # SQLite compares text exactly already; its column type has no collation
        with op.batch_alter_table("UserMonitorRun") as batch:
            batch.alter_column("userId", type_=nopad, existing_type=old, nullable=False)

    op.create_table(
        "UsedSignInToken",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expiresAt", MILLIS, nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_UsedSignInToken_expiresAt", "UsedSignInToken", ["expiresAt"])

    op.create_table(
        "WebSession",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("userId", nopad, nullable=False),
        sa.Column("isAdmin", sa.Boolean(), nullable=False),
        sa.Column("createdAt", MILLIS, nullable=False),
        sa.Column("expiresAt", MILLIS, nullable=False),
        sa.Column("revokedAt", MILLIS, nullable=True),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_WebSession_userId", "WebSession", ["userId"])
    op.create_index("ix_WebSession_expiresAt", "WebSession", ["expiresAt"])


def downgrade() -> None:
    op.drop_table("WebSession")
    op.drop_table("UsedSignInToken")
    old = _user_id(OLD_BIN)
    postgres = op.get_context().dialect.name == "postgresql"
    if op.get_context().dialect.name != "sqlite" and not postgres:
        with op.batch_alter_table("UserMonitorRun") as batch:
            batch.alter_column("userId", type_=old, nullable=False)
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        if not postgres:
            batch.alter_column("userId", type_=old, nullable=False)
        for name in ("enabled", "intervalMinutes", "nextRunAt", "attempt", "createdAt", "updatedAt"):
            batch.alter_column(name, server_default=None)
