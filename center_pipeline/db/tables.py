"""SQLAlchemy Core definitions of the application tables."""

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Slugs from the location API can be long; 512 leaves room above the 500 characters seen.
SLUG_LENGTH = 512

centers = Table(
    "centers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("center_id", String(128), nullable=False, unique=True),
    Column("slug", String(SLUG_LENGTH), nullable=False, unique=True),
    Column("center_name", String(512), nullable=False),
    Column("city", String(128)),
    Column("state", String(2)),
    Column("zip", String(5)),
    Column("owner_email", String(320)),
    Column("radius_miles", Float, nullable=False),
    Column("status", String(32), nullable=False),
    Column("is_active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_synced_at", DateTime(timezone=True), nullable=False),
)

batch_runs = Table(
    "batch_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("run_date", Date, nullable=False),
    Column("total_centers", Integer, nullable=False),
    Column("processed_centers", Integer, nullable=False, default=0),
    Column("successful_centers", Integer, nullable=False, default=0),
    Column("failed_centers", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    # Written every few seconds while the batch runs; a stale value means its process died.
    Column("heartbeat_at", DateTime(timezone=True)),
)

batch_run_centers = Table(
    "batch_run_centers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("batch_runs.run_id"), nullable=False, index=True),
    Column("slug", String(SLUG_LENGTH), nullable=False),
    Column("status", String(16), nullable=False),
    Column("events_found", Integer, nullable=False, default=0),
    Column("events_dropped", Integer, nullable=False, default=0),
    Column("csv_path", Text),
    Column("error", Text),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    # Web searches and other server-side tool calls of the center's LLM call.
    Column("tool_calls", Integer, nullable=False, default=0),
    # Estimated USD cost of the center's LLM call, or NULL when the model has no price.
    Column("cost_usd", Float),
    # Events dropped because no citation of the provider supports them. events_dropped
    # includes them.
    Column("dropped_unsourced", Integer, nullable=False, default=0),
    # The batch run whose LLM call produced this success, when this run carried the success
    # over instead of calling the LLM again.
    Column("carried_over_from", String(64)),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("run_id", "slug", name="uq_batch_run_centers_run_slug"),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("listed", Integer, nullable=False, default=0),
    Column("inserted", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("unchanged", Integer, nullable=False, default=0),
    Column("deactivated", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    # {"failed": {slug: reason}, "skipped": {slug: reason}, "deactivated": [slug, ...]}
    Column("details", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
)

# Launch requests received by the REST bridge; the `bridge_requests` sensor launches them.
bridge_requests = Table(
    "bridge_requests",
    metadata,
    Column("request_id", String(36), primary_key=True),
    # "sync-centers", "run-batch" or "sync-and-run"
    Column("kind", String(32), nullable=False),
    # NULLs never collide, so requests without the header are never merged.
    Column("idempotency_key", String(255)),
    # SHA-256 of the kind and the request body, to detect a key reused for another request.
    Column("fingerprint", String(64), nullable=False),
    # The requested slugs of a run-batch request; NULL means every active center.
    Column("slugs", JSON),
    Column("run_date", Date),
    # "pending", then "launched" or "rejected"
    Column("status", String(16), nullable=False, index=True),
    # [[first slug, last slug], ...]: one run_batch run per range, fixed at the first launch.
    Column("partition_ranges", JSON),
    Column("run_ids", JSON),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("launched_at", DateTime(timezone=True)),
    UniqueConstraint("idempotency_key", name="uq_bridge_requests_idempotency_key"),
)
