"""Create the four tables of the first release.

They match what that release's `metadata.create_all` made, so `center-pipeline db upgrade`
can stamp a database of that release with this revision and upgrade it from here. Keep
this file frozen: later changes go into new revisions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SLUG_LENGTH = 512


def upgrade() -> None:
    op.create_table(
        "centers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("center_id", sa.String(128), nullable=False, unique=True),
        sa.Column("slug", sa.String(SLUG_LENGTH), nullable=False, unique=True),
        sa.Column("center_name", sa.String(512), nullable=False),
        sa.Column("city", sa.String(128)),
        sa.Column("state", sa.String(2)),
        sa.Column("zip", sa.String(5)),
        sa.Column("owner_email", sa.String(320)),
        sa.Column("radius_miles", sa.Float, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "batch_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("total_centers", sa.Integer, nullable=False),
        sa.Column("processed_centers", sa.Integer, nullable=False),
        sa.Column("successful_centers", sa.Integer, nullable=False),
        sa.Column("failed_centers", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "batch_run_centers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(64),
            sa.ForeignKey("batch_runs.run_id"),
            nullable=False,
            index=True,
        ),
        sa.Column("slug", sa.String(SLUG_LENGTH), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("events_found", sa.Integer, nullable=False),
        sa.Column("events_dropped", sa.Integer, nullable=False),
        sa.Column("csv_path", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "slug", name="uq_batch_run_centers_run_slug"),
    )
    op.create_table(
        "sync_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("listed", sa.Integer, nullable=False),
        sa.Column("inserted", sa.Integer, nullable=False),
        sa.Column("updated", sa.Integer, nullable=False),
        sa.Column("unchanged", sa.Integer, nullable=False),
        sa.Column("deactivated", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("sync_runs")
    op.drop_table("batch_run_centers")
    op.drop_table("batch_runs")
    op.drop_table("centers")
