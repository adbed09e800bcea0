"""The dynamic partitions of `center_events`: one partition per active center slug."""

from collections.abc import Sequence
from dataclasses import dataclass

from dagster import DagsterInstance, DynamicPartitionsDefinition
from dagster._core.storage.event_log.schema import DynamicPartitionsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

center_partitions = DynamicPartitionsDefinition(name="centers")

# Dagster rejects "..." in partition keys. Commas and brackets would break the
# comma-separated and range forms of partition selections in the UI and in run tags.
_FORBIDDEN_SUBSTRINGS = ("...", ",", "[", "]")
MAX_PARTITION_KEY_LENGTH = 255

# Keys per add call or delete statement. Dagster's SQLite storage binds one variable per
# key, and very large calls fail with "too many SQL variables".
PARTITION_CHUNK_SIZE = 500


def partition_key_problem(slug: str) -> str | None:
    """Why a slug cannot be a partition key, or None when it can."""
    if not slug:
        return "the slug is empty"
    if len(slug) > MAX_PARTITION_KEY_LENGTH:
        return f"the slug is {len(slug)} characters long; partition keys allow at most 255"
    if any(not character.isprintable() for character in slug):
        return "the slug contains control characters"
    for substring in _FORBIDDEN_SUBSTRINGS:
        if substring in slug:
            return f"the slug contains {substring!r}, which Dagster partition keys cannot hold"
    return None


@dataclass(frozen=True)
class PartitionChanges:
    added: list[str]
    removed: list[str]
    rejected: dict[str, str]


def sync_center_partitions(
    instance: DagsterInstance, active_slugs: Sequence[str]
) -> PartitionChanges:
    """Make the partitions equal the usable active slugs, adding and removing in chunks."""
    rejected = {slug: problem for slug in active_slugs if (problem := partition_key_problem(slug))}
    usable = [slug for slug in active_slugs if slug not in rejected]
    current = set(instance.get_dynamic_partitions(center_partitions.name))

    to_add = [slug for slug in usable if slug not in current]
    for start in range(0, len(to_add), PARTITION_CHUNK_SIZE):
        instance.add_dynamic_partitions(
            center_partitions.name, to_add[start : start + PARTITION_CHUNK_SIZE]
        )

    usable_set = set(usable)
    to_remove = sorted(key for key in current if key not in usable_set)
    _delete_partitions(instance, to_remove)

    return PartitionChanges(added=to_add, removed=to_remove, rejected=rejected)


def _delete_partitions(instance: DagsterInstance, keys: Sequence[str]) -> None:
    """Delete partitions of `centers`, one statement per chunk on SQL storages.

    Dagster 1.13's `delete_dynamic_partition` opens a connection and commits once per key,
    which took 40 s for 5,000 keys on the SQLite storage (benchmarks/partitions.py), so SQL
    storages get the same DELETE on the same table for a chunk of keys in one transaction.
    """
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        for key in keys:
            instance.delete_dynamic_partition(center_partitions.name, key)
        return

    # TODO: call Dagster's public API instead once DagsterInstance can delete many dynamic
    # partitions in one call; this reaches into its storage schema and is pinned to 1.13.
    table = DynamicPartitionsTable
    with storage.index_transaction() as connection:
        for start in range(0, len(keys), PARTITION_CHUNK_SIZE):
            connection.execute(
                table.delete().where(
                    table.c.partitions_def_name == center_partitions.name,
                    table.c.partition.in_(keys[start : start + PARTITION_CHUNK_SIZE]),
                )
            )
