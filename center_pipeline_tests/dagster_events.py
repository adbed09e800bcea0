"""What Dagster stored for a batch run, for the tests of the event storage settings."""

from dataclasses import dataclass

from dagster import DagsterEventType, DagsterInstance


@dataclass(frozen=True)
class StoredAssetEvents:
    planned_partition_sets: list[set[str]]
    materialized_partitions: list[str]


def stored_asset_events(instance: DagsterInstance, run_id: str) -> StoredAssetEvents:
    """Read the partitions of each planned-materialization event and each materialization."""
    planned, materialized = [], []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            data = event.event_specific_data
            if data.partitions_subset is not None:
                planned.append(set(data.partitions_subset.get_partition_keys()))
            else:
                planned.append({data.partition})
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialized.append(event.partition)
    return StoredAssetEvents(planned, materialized)
