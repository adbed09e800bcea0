"""The status document of a bridge request: the request, its runs and one overall status."""

from collections.abc import Callable

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from center_pipeline.bridge.planning import expected_run_count
from center_pipeline.bridge.runs import batch_runs_after_sync, request_runs
from center_pipeline.bridge.store import BridgeRequest, RequestKind, RequestStatus
from center_pipeline.partitions import center_partitions

# Overall statuses: pending (not launched yet), queued (no run started yet), running,
# completed (every run succeeded) and failed (a run failed or the request was rejected).
_QUEUED = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING}
_FAILED = {DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED, DagsterRunStatus.CANCELING}

_TOTALS = ("total_centers", "processed_centers", "successful_centers", "failed_centers")


def request_status_document(
    request: BridgeRequest,
    instance: DagsterInstance | None,
    run_document: Callable[[str], dict | None],
) -> dict:
    """Build the request's document; `run_document` returns the document of one run id.

    Without an instance, the runs are the ones the sensor recorded on the request, and the
    batch that follows a sync-and-run is not found.
    """
    runs = _find_runs(request, instance)
    documents = {run_id: run_document(run_id) for run_id in runs}
    states = [_run_state(runs[run_id], documents[run_id]) for run_id in runs]
    sync_run_id = next(iter(runs), None) if request.kind is not RequestKind.RUN_BATCH else None
    batch_run_ids = [run_id for run_id in runs if run_id != sync_run_id]
    status, detail = _overall_status(request, states, instance)

    batches = [doc for doc in documents.values() if doc is not None and doc["kind"] == "batch"]
    return {
        "kind": "request",
        "request_id": request.request_id,
        "request_kind": request.kind.value,
        "status": status,
        "detail": detail,
        "idempotency_key": request.idempotency_key,
        "slugs": request.slugs,
        "run_date": request.run_date,
        "partition_ranges": [list(pair) for pair in request.partition_ranges or ()],
        "created_at": request.created_at,
        "launched_at": request.launched_at,
        "error": request.error,
        "run_ids": list(runs),
        "sync_run_id": sync_run_id,
        "batch_run_ids": batch_run_ids,
        **{name: sum(batch[name] for batch in batches) for name in _TOTALS},
        "runs": [doc for doc in documents.values() if doc is not None],
    }


def run_state(run: DagsterRun) -> str:
    """Map a Dagster run's status to queued, running, completed or failed."""
    if run.status in _QUEUED:
        return "queued"
    if run.status is DagsterRunStatus.SUCCESS:
        return "completed"
    if run.status in _FAILED:
        return "failed"
    return "running"


def _run_state(run: DagsterRun | None, document: dict | None) -> str:
    if run is not None:
        return run_state(run)
    # Without the instance, the batch or sync row records how the run ended.
    recorded = (document or {}).get("status")
    return recorded if recorded in ("completed", "failed") else "running"


def _find_runs(
    request: BridgeRequest, instance: DagsterInstance | None
) -> dict[str, DagsterRun | None]:
    """Run ids of the request in launch order, each with its Dagster run when known."""
    if instance is None:
        return {run_id: None for run_id in request.run_ids or ()}
    runs: dict[str, DagsterRun | None] = {
        run.run_id: run for run in request_runs(instance, request.request_id)
    }
    if request.kind is RequestKind.SYNC_AND_RUN and runs:
        sync_run_id = next(iter(runs))
        runs.update({run.run_id: run for run in batch_runs_after_sync(instance, sync_run_id)})
    return runs


def _overall_status(
    request: BridgeRequest, states: list[str], instance: DagsterInstance | None
) -> tuple[str, str | None]:
    """Derive the request's status and, while it waits or when it failed, the reason."""
    if request.status is RequestStatus.REJECTED:
        return "failed", f"The request was not launched: {request.error}"
    if not states:
        return "pending", "Waiting for the bridge_requests sensor to launch the runs."
    if "failed" in states:
        return "failed", "A run failed or was canceled; see its document under runs."
    if all(state == "queued" for state in states):
        return "queued", "The runs are queued and have not started yet."
    if any(state != "completed" for state in states):
        return "running", None

    # Every run has succeeded. A run-batch needs all its runs; a sync-and-run also needs the
    # batch that the batch_after_sync sensor launches after the sync.
    if request.kind is RequestKind.RUN_BATCH and len(states) < expected_run_count(request):
        return "running", "Waiting for the bridge_requests sensor to launch the other runs."
    if request.kind is RequestKind.SYNC_AND_RUN and len(states) == 1:
        if instance is None:
            return "running", "The batch run is found only with DAGSTER_HOME set."
        if not instance.get_dynamic_partitions(center_partitions.name):
            return "completed", "The sync left no active centers, so no batch ran."
        return "running", "Waiting for the batch_after_sync sensor to launch run_batch."
    return "completed", None
