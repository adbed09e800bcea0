"""Create bridge_requests, the launch requests that the REST bridge receives.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bridge_requests",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("slugs", sa.JSON),
        sa.Column("run_date", sa.Date),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("partition_ranges", sa.JSON),
        sa.Column("run_ids", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("idempotency_key", name="uq_bridge_requests_idempotency_key"),
    )


def downgrade() -> None:
    op.drop_table("bridge_requests")
