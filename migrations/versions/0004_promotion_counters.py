"""counters for promotion and run completion

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 17:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = "('none', 'scheduled', 'queued', 'running', 'up_for_retry')"


def upgrade() -> None:
    with op.batch_alter_table("dag_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unfinished", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("task_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_upstream", sa.Integer(), nullable=True))
    # Runs already in flight keep going: count what each has left to do.
    # pending_upstream stays NULL on existing rows (promotion then reads the states).
    op.execute(
        "UPDATE dag_runs SET unfinished = (SELECT count(*) FROM task_instances ti "
        f"WHERE ti.run_pk = dag_runs.id AND ti.state IN {UNFINISHED})"
    )


def downgrade() -> None:
    with op.batch_alter_table("task_instances", schema=None) as batch_op:
        batch_op.drop_column("pending_upstream")
    with op.batch_alter_table("dag_runs", schema=None) as batch_op:
        batch_op.drop_column("unfinished")
