"""Keeps `batch_runs` in step with the Dagster runs that write it."""

import logging
from datetime import UTC, datetime

from dagster import DagsterInstance
from sqlalchemy import Engine

from center_pipeline.db.batch_runs import RunStatus, finish_batch_run, running_batch_run_ids

logger = logging.getLogger(__name__)


def fail_abandoned_batch_runs(engine: Engine, instance: DagsterInstance) -> list[str]:
    """Mark `running` batch rows failed when their Dagster run has ended or is unknown.

    A process killed mid-batch cannot update its own row; this sweep runs from the
    run-failure sensor and at the start of every batch.
    """
    abandoned = []
    for run_id in running_batch_run_ids(engine):
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            continue
        state = "is unknown to the Dagster instance" if run is None else f"ended as {run.status.value}"
        finish_batch_run(
            engine,
            run_id,
            RunStatus.FAILED,
            datetime.now(UTC),
            error=f"The Dagster run {state} before the batch finished.",
        )
        logger.warning("Marked batch run %s failed: its Dagster run %s", run_id, state)
        abandoned.append(run_id)
    return abandoned
