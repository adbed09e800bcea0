"""Request and response models of the REST bridge, as `/docs` shows them."""

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from center_pipeline.db.tables import SLUG_LENGTH

RunState = Literal["queued", "running", "completed", "failed"]
RequestKindName = Literal["sync-centers", "run-batch", "sync-and-run"]

# Request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyncCentersBody(_Body):
    """No fields; send `{}` or no body."""


class SyncAndRunBody(_Body):
    """No fields; send `{}` or no body. The batch always covers every active center."""


Slug = Annotated[str, StringConstraints(min_length=1, max_length=SLUG_LENGTH)]


class RunBatchBody(_Body):
    slugs: list[Slug] | None = Field(
        default=None,
        min_length=1,
        description="Slugs of active centers, duplicates ignored. Default: every active center.",
        examples=[["austin-downtown", "boston-jp"]],
    )
    run_date: date | None = Field(
        default=None,
        description="Run date of the batch (YYYY-MM-DD); CSVs of that day are rewritten. "
        "Default: today in CRON_TIMEZONE.",
    )


# Responses


class LaunchAccepted(BaseModel):
    request_id: str
    request_kind: RequestKindName
    status: Literal["pending", "queued", "running", "completed", "failed"]
    run_ids: list[str] = Field(description="Dagster run ids; empty until the sensor launches.")
    status_url: str = Field(description="GET this URL for the request's status document.")
    created_at: datetime
    replayed: bool = Field(
        description="True when an earlier request with the same Idempotency-Key was returned."
    )


class ErrorMessage(BaseModel):
    detail: Any = Field(description="What was wrong; for rejected slugs, each slug with why.")


class _Document(BaseModel):
    # The CLI prints the same documents and the tables may gain columns, so extra keys pass.
    model_config = ConfigDict(extra="allow")


class CenterResultDocument(_Document):
    slug: str
    status: str = Field(description="success or failed")
    events_found: int
    events_dropped: int
    csv_path: str | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    finished_at: datetime


class BatchRunDocument(_Document):
    kind: Literal["batch"]
    run_id: str
    status: Literal["running", "completed", "failed"]
    run_date: date
    total_centers: int
    processed_centers: int
    successful_centers: int
    failed_centers: int
    error: str | None
    started_at: datetime
    completed_at: datetime | None
    results: list[CenterResultDocument]
    dagster_status: str | None = None


class SyncRunDocument(_Document):
    kind: Literal["sync"]
    run_id: str
    status: str
    listed: int
    inserted: int
    updated: int
    unchanged: int
    deactivated: int
    skipped: int
    failed: int
    details: dict[str, Any] = Field(
        description='{"failed": {slug: reason}, "skipped": {slug: reason}, "deactivated": [slug]}'
    )
    started_at: datetime
    completed_at: datetime | None
    dagster_status: str | None = None


class RunDocument(_Document):
    """A Dagster run that has written no batch or sync row (yet)."""

    kind: Literal["run"]
    run_id: str
    job_name: str
    status: RunState
    dagster_status: str | None = None


AnyRunDocument = Annotated[
    BatchRunDocument | SyncRunDocument | RunDocument, Field(discriminator="kind")
]


class RequestDocument(_Document):
    kind: Literal["request"]
    request_id: str
    request_kind: RequestKindName
    status: Literal["pending", "queued", "running", "completed", "failed"]
    detail: str | None = Field(description="Why the request waits or failed.")
    idempotency_key: str | None
    slugs: list[str] | None
    run_date: date | None
    partition_ranges: list[list[str]] = Field(
        description="[first slug, last slug] of each run_batch run of a run-batch request."
    )
    created_at: datetime
    launched_at: datetime | None
    error: str | None
    run_ids: list[str]
    sync_run_id: str | None
    batch_run_ids: list[str]
    total_centers: int = Field(description="Summed over the batch runs; so are the next three.")
    processed_centers: int
    successful_centers: int
    failed_centers: int
    runs: list[AnyRunDocument]


StatusDocument = Annotated[
    BatchRunDocument | SyncRunDocument | RunDocument | RequestDocument,
    Field(discriminator="kind"),
]


class TickRun(BaseModel):
    run_id: str
    status: RunState | None
    dagster_status: str | None


class LastTick(BaseModel):
    timestamp: datetime
    outcome: Literal["started", "skipped", "success", "failure"]
    skip_reason: str | None
    error: str | None
    runs: list[TickRun]


class ScheduleStatus(BaseModel):
    name: str
    cron_schedule: str
    timezone: str
    enabled: bool = Field(description="CRON_ENABLED, false also when a cron setting is invalid.")
    description: str | None
    state: Literal["running", "stopped"] = Field(description="In the Dagster instance.")
    next_tick: datetime | None
    last_tick: LastTick | None


class DaemonInfo(BaseModel):
    daemon_type: str
    alive: bool
    last_heartbeat: datetime | None
    errors: list[str]


class DaemonStatus(BaseModel):
    alive: bool = Field(description="Every daemon the instance needs has a recent heartbeat.")
    heartbeat_max_age_seconds: int
    daemons: list[DaemonInfo]


class SensorStatus(BaseModel):
    name: str
    state: Literal["running", "stopped"]


class PendingRequest(BaseModel):
    request_id: str
    request_kind: RequestKindName
    slugs: list[str] | None
    created_at: datetime


class CronStatus(BaseModel):
    schedule: ScheduleStatus
    daemon: DaemonStatus
    sensors: list[SensorStatus] = Field(description="The sensors that launch bridge requests.")
    pending_count: int
    pending_requests: list[PendingRequest] = Field(description="The oldest 100 not launched.")
