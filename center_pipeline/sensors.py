"""Sensors that chain the batch after a sync and clean up after crashed batches."""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
)

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
    description="Launch run_batch over all active centers after each successful sync_and_run.",
)
def batch_after_sync(context: RunStatusSensorContext):
    sync_run_id = context.dagster_run.run_id
    tags = all_centers_tags(context.instance)
    if tags is None:
        return SkipReason(f"Sync run {sync_run_id} left no active centers to process.")
    return RunRequest(run_key=f"batch-after-{sync_run_id}", tags={**tags, SYNC_RUN_TAG: sync_run_id})


@run_failure_sensor(
    name="fail_abandoned_batches",
    default_status=DefaultSensorStatus.RUNNING,
    description="Mark batch_runs rows failed when the Dagster run that wrote them has ended.",
)
def fail_abandoned_batches(context: RunFailureSensorContext, database: DatabaseResource) -> None:
    abandoned = fail_abandoned_batch_runs(database.engine, context.instance)
    if abandoned:
        context.log.info("Marked %d abandoned batch runs failed: %s", len(abandoned), abandoned)
