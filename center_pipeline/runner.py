"""Runs the jobs in-process against the Dagster instance in DAGSTER_HOME, with progress."""

import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, ExecuteInProcessResult
from dagster._core.utils import make_new_run_id
from sqlalchemy import Engine
from tqdm import tqdm

from center_pipeline.config import ConfigError
from center_pipeline.db.batch_runs import get_batch_run

logger = logging.getLogger(__name__)

# Dagster's console logger prints every event at DEBUG; INFO keeps the asset's own lines.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
MINIMAL_INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def open_instance() -> DagsterInstance:
    """Open the instance in DAGSTER_HOME, so CLI runs show in `dagster dev` and the daemon."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ConfigError(
            "Invalid configuration: DAGSTER_HOME is not set. It is the folder of the Dagster "
            "instance that records runs. Example: export DAGSTER_HOME=$PWD/.dagster_home"
        )
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "dagster.yaml").exists():
        (path / "dagster.yaml").write_text(MINIMAL_INSTANCE_YAML)
        logger.info("Wrote %s with telemetry off", path / "dagster.yaml")
    return DagsterInstance.get()


@dataclass(frozen=True)
class JobRun:
    run_id: str
    success: bool
    result: ExecuteInProcessResult


def execute_job(
    job_name: str,
    instance: DagsterInstance,
    tags: dict[str, str] | None = None,
    progress_engine: Engine | None = None,
) -> JobRun:
    """Execute one job of the code location in this process and record it in the instance.

    With `progress_engine`, a thread follows the run's `batch_runs` row and draws progress.
    """
    from center_pipeline.definitions import build_definitions

    # Built anew so that resources see the environment as it is now, not at first import.
    job = build_definitions().resolve_job_def(job_name)
    run_id = make_new_run_id()
    monitor = _BatchProgress(progress_engine, run_id) if progress_engine is not None else None
    if monitor:
        monitor.start()
    try:
        result = job.execute_in_process(
            run_config=RUN_CONFIG,
            instance=instance,
            run_id=run_id,
            tags=tags,
            raise_on_error=False,
        )
    finally:
        if monitor:
            monitor.stop()
    return JobRun(run_id=run_id, success=result.success, result=result)


def first_failure_message(job_run: JobRun) -> str | None:
    """Return the error message of the run's first failed step, or of the run itself."""
    for event in job_run.result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            # Dagster wraps the asset's exception; the cause at the end names the problem.
            while error.cause is not None:
                error = error.cause
            return error.message.strip()
    for event in job_run.result.all_events:
        if event.is_failure and event.message:
            return event.message.strip()
    return None


class _BatchProgress:
    """Polls `batch_runs` for processed / total and shows a bar, or lines when not a terminal."""

    POLL_SECONDS = 0.5

    def __init__(self, engine: Engine, run_id: str):
        self._engine = engine
        self._run_id = run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="batch-progress", daemon=True)
        self._bar: tqdm | None = None
        self._last_printed = -1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._show()
        if self._bar is not None:
            self._bar.close()

    def _follow(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            self._show()

    def _show(self) -> None:
        try:
            row = get_batch_run(self._engine, self._run_id)
        except Exception:  # noqa: BLE001 - progress display must never break the run
            logger.debug("Reading batch progress failed", exc_info=True)
            return
        if row is None:
            return
        done, total = row["processed_centers"], row["total_centers"]
        if sys.stderr.isatty():
            if self._bar is None:
                self._bar = tqdm(total=total, desc="Centers", unit="center", file=sys.stderr)
            self._bar.update(done - self._bar.n)
        elif done != self._last_printed and (
            done == total or done - self._last_printed >= max(1, total // 10)
        ):
            print(f"Centers done: {done} of {total}", file=sys.stderr, flush=True)
            self._last_printed = done
