"""Sensors that chain the batch after a sync and clean up after crashed batches."""

from datetime import timedelta

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_status_sensor,
    sensor,
)

from center_pipeline.config import EventSettings, load_settings
from center_pipeline.db.resource import DatabaseResource
from center_pipeline.events.tracking import fail_abandoned_batch_runs
from center_pipeline.jobs import batch_job, sync_and_run_job
from center_pipeline.launch import SYNC_RUN_TAG, all_centers_tags


@run_status_sensor(
    name="batch_after_sync",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[sync_and_run_job],
    request_job=batch_job,
    default_status=DefaultSensorStatus.RUNNING,
    # The default of 30 s would leave the batch waiting on a tick after every sync.
    minimum_interval_seconds=10,
    description="Launch run_batch over all active centers after each successful sync_and_run.",
)
def batch_after_sync(context: RunStatusSensorContext):
    sync_run_id = context.dagster_run.run_id
    tags = all_centers_tags(context.instance)
    if tags is None:
        return SkipReason(f"Sync run {sync_run_id} left no active centers to process.")
    return RunRequest(
        run_key=f"batch-after-{sync_run_id}", tags={**tags, SYNC_RUN_TAG: sync_run_id}
    )


@sensor(
    name="fail_abandoned_batches",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Mark batch_runs rows failed when their Dagster run has ended, or when their heartbeat "
        "is older than BATCH_STALE_AFTER_SECONDS because the process died."
    ),
)
def fail_abandoned_batches(context: SensorEvaluationContext, database: DatabaseResource):
    stale_after = timedelta(seconds=load_settings(EventSettings).batch_stale_after_seconds)
    abandoned = fail_abandoned_batch_runs(database.engine, context.instance, stale_after)
    if not abandoned:
        return SkipReason("No abandoned batch runs.")
    context.log.info("Marked %d abandoned batch runs failed: %s", len(abandoned), abandoned)
    return SkipReason(f"Marked {len(abandoned)} abandoned batch runs failed: {abandoned}")
