"""Sign-out everywhere reaches Bearer tokens too: when each user was last signed out.

- WebSignOut: one row per user ever signed out everywhere (`monitor-scheduler sign-out USER`).
  `signedOutAt`: a Bearer token of that user issued before it (its `iat`) is refused;
  `adminSignedOutAt`: the same for tokens with `admin: true` only (`sign-out --admin-only`).
  Sessions keep their own `revokedAt` (WebSession); this table is for the tokens, which the server
  does not store.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql, postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MILLIS = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb").with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}
MARIADB_NOPAD_BIN, MYSQL_NOPAD_BIN = "utf8mb4_nopad_bin", "utf8mb4_0900_bin"


def _user_id() -> sa.types.TypeEngine:
    """As UserMonitorSchedule.userId since 0003: exact comparison, no trailing-space padding."""
    mariadb = context.is_offline_mode() or bool(getattr(op.get_bind().dialect, "is_mariadb", False))
    collation = MARIADB_NOPAD_BIN if mariadb else MYSQL_NOPAD_BIN
    return (
        sa.String(64)
        .with_variant(mysql.VARCHAR(64, charset="utf8mb4", collation=collation), "mysql", "mariadb")
        .with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")
    )


def upgrade() -> None:
    op.create_table(
        "WebSignOut",
        sa.Column("userId", _user_id(), primary_key=True),
        sa.Column("signedOutAt", MILLIS, nullable=True),
        sa.Column("adminSignedOutAt", MILLIS, nullable=True),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("WebSignOut")
