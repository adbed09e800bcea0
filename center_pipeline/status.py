"""The status document of a batch or sync run, as the CLI and the bridge return it."""

from datetime import date, datetime

from dagster import DagsterInstance
from sqlalchemy import Engine

from center_pipeline.db.batch_runs import get_batch_run, get_sync_run


def run_status_document(engine: Engine, run_id: str, instance: DagsterInstance | None) -> dict | None:
    """The batch run row with per-center results, or the sync outcome; None if unknown."""
    batch = get_batch_run(engine, run_id)
    if batch is not None:
        document = {"kind": "batch", **batch}
    else:
        sync = get_sync_run(engine, run_id)
        if sync is None:
            return None
        document = {"kind": "sync", **sync}

    if instance is not None:
        run = instance.get_run_by_id(run_id)
        document["dagster_status"] = run.status.value if run else None
    return _json_ready(document)


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
