"""Finds the Dagster runs that a bridge request launched, directly or through a sensor chain."""

from dagster import DagsterInstance, DagsterRun, RunsFilter
from dagster._core.storage.tags import PARENT_RUN_ID_TAG

from center_pipeline.bridge.planning import REQUEST_TAG
from center_pipeline.launch import SYNC_RUN_TAG


def request_runs(instance: DagsterInstance, request_id: str) -> list[DagsterRun]:
    """Find the runs tagged with the request id, oldest first.

    A re-execution from the UI copies the tags of its parent run, so runs with a parent are
    left out: the request owns only the runs that its sensor launched.
    """
    runs = instance.get_runs(filters=RunsFilter(tags={REQUEST_TAG: request_id}))
    return _original_oldest_first(runs)


def batch_runs_after_sync(instance: DagsterInstance, sync_run_id: str) -> list[DagsterRun]:
    """Find the run_batch runs that `batch_after_sync` launched for a sync run, oldest first."""
    runs = instance.get_runs(
        filters=RunsFilter(job_name="run_batch", tags={SYNC_RUN_TAG: sync_run_id})
    )
    return _original_oldest_first(runs)


def _original_oldest_first(runs) -> list[DagsterRun]:
    # get_runs returns the newest run first.
    return [run for run in reversed(list(runs)) if PARENT_RUN_ID_TAG not in run.tags]
