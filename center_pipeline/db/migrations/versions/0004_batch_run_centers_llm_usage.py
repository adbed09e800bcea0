"""Add the LLM usage columns of batch_run_centers: tool calls, cost, unsourced drops, carry-over.

Existing rows get 0 tool calls and 0 unsourced drops, through a server default that stays
on the two columns, and NULL cost and carry-over.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "batch_run_centers",
        sa.Column("tool_calls", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("batch_run_centers", sa.Column("cost_usd", sa.Float))
    op.add_column(
        "batch_run_centers",
        sa.Column("dropped_unsourced", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("batch_run_centers", sa.Column("carried_over_from", sa.String(64)))


def downgrade() -> None:
    # Batch mode copies the table on SQLite, whose ALTER TABLE cannot always drop a column.
    with op.batch_alter_table("batch_run_centers") as batch:
        batch.drop_column("carried_over_from")
        batch.drop_column("dropped_unsourced")
        batch.drop_column("cost_usd")
        batch.drop_column("tool_calls")
