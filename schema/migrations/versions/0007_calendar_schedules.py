"""Calendar schedules: a cron expression in a time zone beside the interval, and spread start times.

- UserMonitorSchedule.cronExpr: NULL for an interval schedule (every existing row, and rows
  inserted by plain SQL, stay interval schedules exactly as before); a 5-field cron expression
  otherwise, read in `timeZone` (core/calendar.py). `nextRunAt` stays the next slot in UTC, so the
  claim and the operators' SQL are unchanged.
- UserMonitorSchedule.timeZone: the IANA zone of the expression, default 'UTC'.
- UserMonitorSchedule.spreadSeconds: the bound of a cron schedule's per-user start offset
  ("09:00 plus up to 10 minutes"), 0 to 86400, default 0.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        batch.add_column(sa.Column("cronExpr", sa.String(100), nullable=True))
        batch.add_column(sa.Column("timeZone", sa.String(64), nullable=False, server_default=sa.text("'UTC'")))
        batch.add_column(sa.Column("spreadSeconds", sa.Integer(), nullable=False, server_default=sa.text("0")))
        # PostgreSQL folds unquoted names to lower case: quote the camelCase column there only.
        postgres = op.get_context().dialect.name == "postgresql"
        batch.create_check_constraint(
            "ck_UserMonitorSchedule_spread", '"spreadSeconds" BETWEEN 0 AND 86400' if postgres else "spreadSeconds BETWEEN 0 AND 86400"
        )


def downgrade() -> None:
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        batch.drop_constraint("ck_UserMonitorSchedule_spread", type_="check")
        batch.drop_column("spreadSeconds")
        batch.drop_column("timeZone")
        batch.drop_column("cronExpr")
