"""Long runs: when a run really started, its progress, and capacity samples over time.

- UserMonitorSchedule.runStartedAt: set when a worker starts the run (the same fenced write that
  renews the lease), cleared by a claim; tells a run waiting in the queue from one in progress.
- UserMonitorSchedule.progress / progressMessage / progressAt: the run's last reported progress
  (0..1 and a short message), written fenced on the lease, cleared when the next run is claimed.
- UserMonitorRun.progressMessage: the last message a finished run reported.
- SchedulerSample: one row per dispatch pass (due, queued, running, the concurrency the schedules
  need and the concurrency available), for the admin chart and the capacity check; pruned by age.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MILLIS = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb").with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")
MESSAGE = sa.String(255).with_variant(mysql.VARCHAR(255, charset="utf8mb4"), "mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        batch.add_column(sa.Column("runStartedAt", MILLIS, nullable=True))
        batch.add_column(sa.Column("progress", sa.Float(), nullable=True))
        batch.add_column(sa.Column("progressMessage", MESSAGE, nullable=True))
        batch.add_column(sa.Column("progressAt", MILLIS, nullable=True))
    with op.batch_alter_table("UserMonitorRun") as batch:
        batch.add_column(sa.Column("progressMessage", MESSAGE, nullable=True))
    op.create_table(
        "SchedulerSample",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", MILLIS, nullable=False),
        sa.Column("due", sa.Integer(), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("demand", sa.Float(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_SchedulerSample_at", "SchedulerSample", ["at"])


def downgrade() -> None:
    op.drop_table("SchedulerSample")
    with op.batch_alter_table("UserMonitorRun") as batch:
        batch.drop_column("progressMessage")
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        for name in ("progressAt", "progressMessage", "progress", "runStartedAt"):
            batch.drop_column(name)
