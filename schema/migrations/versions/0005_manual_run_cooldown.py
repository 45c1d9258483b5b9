"""The "Run now" cooldown: when a user last asked for a manual run.

- UserMonitorSchedule.manualRunAt: set by the claim of a user's own "Run now" (the settings page,
  /api/schedules/me/run; operators' runs leave it alone), in the same UPDATE that takes the lease;
  such a request is admitted only when it is NULL or older than RUN_NOW_COOLDOWN (a condition of that UPDATE, so every web process and host
  decides from the same row). NULL for rows inserted by plain SQL: no manual run yet.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MILLIS = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb").with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        batch.add_column(sa.Column("manualRunAt", MILLIS, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        batch.drop_column("manualRunAt")
