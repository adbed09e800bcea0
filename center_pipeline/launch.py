"""Run tags that select partitions, shared by the CLI and the sensors."""

from dagster import DagsterInstance
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from center_pipeline.partitions import center_partitions

# Links a batch run to the sync run that started it.
SYNC_RUN_TAG = "center_pipeline/sync_run_id"


def all_centers_tags(instance: DagsterInstance) -> dict[str, str] | None:
    """Tags for one run over every center partition, or None when there are none.

    Dynamic partitions keep the order in which they were added, so the range from the
    first key to the last one covers them all.
    """
    keys = instance.get_dynamic_partitions(center_partitions.name)
    if not keys:
        return None
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
