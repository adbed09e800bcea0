"""Dagster storage settings that exist only as environment variables.

A batch is one Dagster run over every center's partition. Two settings, which Dagster
reads only from the environment, decide how long Dagster takes to store such a run:

- `DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`: creating a run over N partitions
  stores one planned-materialization event that names them all, instead of N events.
  The process that creates the run reads it. That is the `center-pipeline` command for
  its own runs, the daemon for schedule and sensor runs, and the webserver for the UI's.
- `DAGSTER_EVENT_BATCH_SIZE`: the run worker stores the N materializations of a batch in
  statements of this many rows on PostgreSQL, instead of one connection per event.

At 3,000 centers on PostgreSQL without latency, the two cut a batch from 164 s to 35 s
(docs/BENCHMARKS.md). The price, as the comment on
`EventLogStorage.supports_partition_subset_in_asset_materialization_planned_events` in
Dagster 1.13.27 states it: when a batch run fails as a whole, Dagster does not mark its
partitions failed. `batch_runs` and `batch_run_centers` still record every center's
outcome. On SQLite, Dagster stores a batch of events one by one, so there only the first
setting saves time.

A value already in the environment wins, so an operator can set either one to `0` to
restore Dagster's default.
"""

import os
from collections.abc import MutableMapping

EVENT_STORAGE_DEFAULTS = {
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
}


def apply_event_storage_defaults(
    environ: MutableMapping[str, str] = os.environ,
) -> dict[str, str]:
    """Set each variable of EVENT_STORAGE_DEFAULTS that is not set, and return those."""
    applied = {}
    for name, value in EVENT_STORAGE_DEFAULTS.items():
        if name not in environ:
            environ[name] = value
            applied[name] = value
    return applied
