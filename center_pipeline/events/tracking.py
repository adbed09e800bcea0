"""Keeps `batch_runs` in step with the Dagster runs that write it.

A batch writes a heartbeat while it runs. A process killed mid-batch cannot update its own
row, so `fail_abandoned_batch_runs` marks a row failed when its Dagster run has ended or its
heartbeat has gone stale, and marks that Dagster run failed too so the UI agrees.
"""

import logging
import threading
from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance
from sqlalchemy import Engine

from center_pipeline.db.batch_runs import (
    RunStatus,
    finish_batch_run,
    record_heartbeat,
    running_batch_runs,
)

logger = logging.getLogger(__name__)


def fail_abandoned_batch_runs(
    engine: Engine, instance: DagsterInstance, stale_after: timedelta
) -> list[str]:
    """Mark failed each `running` batch whose run has ended or sent no heartbeat lately."""
    now = datetime.now(UTC)
    abandoned = []
    for run_id, heartbeat_at in running_batch_runs(engine):
        run = instance.get_run_by_id(run_id)
        if run is None:
            reason = "its Dagster run is unknown to this instance"
        elif run.is_finished:
            reason = f"its Dagster run ended as {run.status.value}"
        elif heartbeat_at is None or now - heartbeat_at > stale_after:
            last_beat = heartbeat_at.isoformat() if heartbeat_at else "it started"
            reason = (
                f"it sent no heartbeat since {last_beat} "
                f"(limit {stale_after.total_seconds():.0f} s), so its process is presumed dead"
            )
            instance.report_run_failed(run, f"Batch run marked failed: {reason}.")
        else:
            continue
        finish_batch_run(
            engine, run_id, RunStatus.FAILED, now, error=f"Batch did not finish: {reason}."
        )
        logger.warning("Marked batch run %s failed: %s", run_id, reason)
        abandoned.append(run_id)
    return abandoned


class Heartbeat:
    """Writes the batch's heartbeat every `interval_seconds` from a background thread."""

    def __init__(self, engine: Engine, run_id: str, interval_seconds: float):
        self._engine = engine
        self._run_id = run_id
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="batch-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                record_heartbeat(self._engine, self._run_id, datetime.now(UTC))
            except Exception:  # noqa: BLE001 - a missed beat must not end the batch
                logger.warning(
                    "Writing the heartbeat of batch %s failed", self._run_id, exc_info=True
                )
