"""Scheduler status: when the last dispatch pass succeeded (dead-man check).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MILLIS = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb").with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")
TEXT = sa.Text().with_variant(mysql.TEXT(charset="utf8mb4"), "mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    table = op.create_table(
        "SchedulerStatus",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("at", MILLIS, nullable=True),
        sa.Column("detail", TEXT, nullable=True),
        **TABLE_OPTIONS,
    )
    # The row exists from the start, so recording a pass is always a plain UPDATE.
    op.bulk_insert(table, [{"name": "dispatch", "at": None, "detail": None}])


def downgrade() -> None:
    op.drop_table("SchedulerStatus")
