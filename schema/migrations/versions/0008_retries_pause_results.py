"""When a run fails: retries within the slot, auto-pause of schedules that keep failing, a run's result.

UserMonitorSchedule (every new column NULL or defaulted, so a plain-SQL insert of a schedule still
works and existing rows keep today's behaviour):
- retries: attempts after the first within one slot, 0-10; NULL takes the settings default.
- retryBackoffSeconds: the base delay of the exponential backoff between attempts, 1-86400 s;
  NULL takes the settings default.
- pauseAfter: consecutive failed slots after which the schedule pauses, 0-1000 (0: never pause
  this schedule); NULL takes the settings default (which is "never" unless configured).
- failedSlots: consecutive slots whose final outcome was a failure (reset by a success or a resume).
- retrying: the slot in runSlot failed and waits for its retry at nextRunAt (the claim that takes
  the row runs that slot again as attempt + 1, and clears it).
- paused / pausedAt / pausedReason: a state of its own, not a far-future nextRunAt. The claim
  excludes paused rows like disabled ones, so the due index gains `paused` between `enabled` and
  `nextRunAt`: the claim stays an index range scan in nextRunAt order, and paused rows are never
  scanned by a pass.

UserMonitorRun.result: the JSON a task returned (at most 4 KB of text), or a note saying why it
was not kept.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Millis = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb").with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")
ErrorText = sa.Text().with_variant(mysql.TEXT(charset="utf8mb4"), "mysql", "mariadb")


def _check(column: str, low: int, high: int) -> str:
    # PostgreSQL folds unquoted names to lower case: quote the camelCase column there only.
    name = f'"{column}"' if op.get_context().dialect.name == "postgresql" else column
    return f"{name} BETWEEN {low} AND {high}"


def upgrade() -> None:
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("retryBackoffSeconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pauseAfter", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("failedSlots", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("retrying", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("pausedAt", Millis, nullable=True))
        batch.add_column(sa.Column("pausedReason", ErrorText, nullable=True))
        batch.create_check_constraint("ck_UserMonitorSchedule_retries", _check("retries", 0, 10))
        batch.create_check_constraint("ck_UserMonitorSchedule_retryBackoff", _check("retryBackoffSeconds", 1, 86400))
        batch.create_check_constraint("ck_UserMonitorSchedule_pauseAfter", _check("pauseAfter", 0, 1000))
        batch.drop_index("ix_UserMonitorSchedule_due")
        batch.create_index("ix_UserMonitorSchedule_due", ["enabled", "paused", "nextRunAt"])
    with op.batch_alter_table("UserMonitorRun") as batch:
        batch.add_column(sa.Column("result", ErrorText, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("UserMonitorRun") as batch:
        batch.drop_column("result")
    with op.batch_alter_table("UserMonitorSchedule") as batch:
        batch.drop_index("ix_UserMonitorSchedule_due")
        batch.create_index("ix_UserMonitorSchedule_due", ["enabled", "nextRunAt"])
        batch.drop_constraint("ck_UserMonitorSchedule_pauseAfter", type_="check")
        batch.drop_constraint("ck_UserMonitorSchedule_retryBackoff", type_="check")
        batch.drop_constraint("ck_UserMonitorSchedule_retries", type_="check")
        for column in ("pausedReason", "pausedAt", "paused", "retrying", "failedSlots", "pauseAfter", "retryBackoffSeconds", "retries"):
            batch.drop_column(column)
