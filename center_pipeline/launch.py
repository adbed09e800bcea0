"""Run tags that select partitions, shared by the CLI and the sensors."""

from datetime import timedelta

from dagster import DagsterInstance
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARENT_RUN_ID_TAG,
    ROOT_RUN_ID_TAG,
)
from sqlalchemy import Engine

from center_pipeline.config import ConfigError, EventSettings, load_settings
from center_pipeline.db.batch_runs import get_batch_run
from center_pipeline.events.tracking import fail_abandoned_batch_runs
from center_pipeline.partitions import center_partitions

# Links a batch run to the sync run that started it.
SYNC_RUN_TAG = "center_pipeline/sync_run_id"
# Pins the run date of a batch, as YYYY-MM-DD.
RUN_DATE_TAG = "center_pipeline/run_date"


def all_centers_tags(instance: DagsterInstance) -> dict[str, str] | None:
    """Tags for one run over every center partition, or None when there are none.

    Dynamic partitions keep the order in which they were added, so the range from the
    first key to the last one covers them all.
    """
    keys = instance.get_dynamic_partitions(center_partitions.name)
    if not keys:
        return None
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


def resume_tags(instance: DagsterInstance, engine: Engine, run_id: str) -> dict[str, str]:
    """Tags that re-execute batch run `run_id` the way the UI's re-execution does.

    The new run covers the same partitions and run date and carries the parent and root run
    ids, so the batch skips centers that already succeeded in that group of runs.

    Raises:
        ConfigError: the run is unknown, not a batch, or still running.
    """
    run = instance.get_run_by_id(run_id)
    batch = get_batch_run(engine, run_id)
    if run is None or batch is None:
        raise ConfigError(
            f"No batch run with id {run_id!r}; `center-pipeline status` lists it if it exists."
        )

    stale_after = timedelta(seconds=load_settings(EventSettings).batch_stale_after_seconds)
    fail_abandoned_batch_runs(engine, instance, stale_after)
    if (get_batch_run(engine, run_id) or batch)["status"] == "running":
        raise ConfigError(
            f"Batch run {run_id} is still running (its heartbeat is fresh). Wait for it to end, "
            f"or for BATCH_STALE_AFTER_SECONDS ({stale_after.total_seconds():.0f} s) to pass "
            "if its process died."
        )

    range_tags = (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG)
    tags = {name: run.tags[name] for name in range_tags if name in run.tags}
    tags[RUN_DATE_TAG] = batch["run_date"].isoformat()
    tags[PARENT_RUN_ID_TAG] = run_id
    tags[ROOT_RUN_ID_TAG] = run.tags.get(ROOT_RUN_ID_TAG, run_id)
    return tags
