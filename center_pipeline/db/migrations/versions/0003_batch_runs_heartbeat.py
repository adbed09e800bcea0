"""Add batch_runs.heartbeat_at, which a running batch updates every few seconds.

Existing rows get NULL, which the abandoned-batch sweep reads as "no heartbeat since the
start", the same as a batch that died before its first heartbeat.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batch_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # Batch mode copies the table on SQLite, whose ALTER TABLE cannot always drop a column.
    with op.batch_alter_table("batch_runs") as batch:
        batch.drop_column("heartbeat_at")
