"""The status document of a run or a bridge request, as the CLI and the bridge return it."""

from datetime import date, datetime

from dagster import DagsterInstance
from sqlalchemy import Engine

from center_pipeline.bridge.request_status import request_status_document, run_state
from center_pipeline.bridge.store import get_request
from center_pipeline.db.batch_runs import get_batch_run, get_sync_run


def run_status_document(engine: Engine, run_id: str, instance: DagsterInstance | None) -> dict | None:
    """Build the document of a Dagster run id or a bridge request id; None if unknown.

    A batch run gets its row with per-center results, a sync run its outcome, and a run that
    wrote no row (yet) its Dagster status. A bridge request gets its own fields, its overall
    status and the documents of its runs.
    """
    request = get_request(engine, run_id)
    if request is not None:
        def document_of_run(request_run_id: str) -> dict | None:
            return _run_document(engine, request_run_id, instance)

        return _json_ready(request_status_document(request, instance, document_of_run))
    document = _run_document(engine, run_id, instance)
    return _json_ready(document) if document is not None else None


def _run_document(engine: Engine, run_id: str, instance: DagsterInstance | None) -> dict | None:
    run = instance.get_run_by_id(run_id) if instance is not None else None
    batch = get_batch_run(engine, run_id)
    sync = get_sync_run(engine, run_id) if batch is None else None
    if batch is not None:
        document = {"kind": "batch", **batch}
    elif sync is not None:
        document = {"kind": "sync", **sync}
    elif run is not None:
        document = {
            "kind": "run",
            "run_id": run_id,
            "job_name": run.job_name,
            "status": run_state(run),
        }
    else:
        return None

    if instance is not None:
        document["dagster_status"] = run.status.value if run else None
    return document


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
