"""Run one job of the pipeline in this process and print its measurements as one JSON line.

`sync_and_batch.py` starts this script in a fresh process for every job it measures, so
each peak RSS belongs to one job alone. The environment selects the Dagster instance
(DAGSTER_HOME), the application database (DATABASE_URL), the sample servers and the
concurrency, as it does for `center-pipeline`.

Usage: python benchmarks/phase.py {sync_centers,run_batch} [--run-date YYYY-MM-DD]
"""

import argparse
import json
import logging
import resource
import sys
import time

from dagster import DagsterEventType, DagsterInstance
from sqlalchemy import select

from center_pipeline.assets.events import RUN_DATE_TAG
from center_pipeline.config import DatabaseSettings, load_settings
from center_pipeline.db.batch_runs import get_sync_run
from center_pipeline.db.engine import create_database_engine
from center_pipeline.db.tables import batch_runs
from center_pipeline.launch import all_centers_tags
from center_pipeline.runner import execute_job

JOBS = ("sync_centers", "run_batch")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=JOBS, help="the job to run")
    parser.add_argument("--run-date", help="run date of the batch as YYYY-MM-DD (default: today)")
    args = parser.parse_args()

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    rss_before_mb = _max_rss_mb()

    with DagsterInstance.get() as instance:
        tags = _job_tags(instance, args.job, args.run_date)
        called_at = time.time()
        started = time.perf_counter()
        run = execute_job(args.job, instance, tags=tags)
        call_seconds = time.perf_counter() - started
        max_rss_mb = _max_rss_mb()

        record = instance.get_run_record_by_id(run.run_id)
        run_seconds = None
        if record is not None and record.start_time and record.end_time:
            run_seconds = record.end_time - record.start_time
        breakdown = _breakdown(instance, args.job, run.run_id, called_at)

    report = {
        "job": args.job,
        "run_id": run.run_id,
        "success": run.success,
        "call_seconds": call_seconds,
        "run_seconds": run_seconds,
        "max_rss_mb": max_rss_mb,
        "rss_before_run_mb": rss_before_mb,
        "breakdown_seconds": breakdown,
        "outcome": _outcome(args.job, run.run_id),
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0 if run.success else 1


def _job_tags(instance: DagsterInstance, job: str, run_date: str | None) -> dict[str, str] | None:
    if job != "run_batch":
        return None
    tags = all_centers_tags(instance)
    if tags is None:
        raise SystemExit("No center partitions exist; the sync must run before the batch.")
    if run_date:
        tags[RUN_DATE_TAG] = run_date
    return tags


def _breakdown(
    instance: DagsterInstance, job: str, run_id: str, called_at: float
) -> dict[str, float]:
    """Split the call into Dagster's steps, from the timestamps of the run's events.

    `to_run_start` covers building the definitions and creating the run, which stores one
    materialization-planned event per partition. `step` runs from the first step's start
    to the last step's success. For the batch, `after_asset` runs from the first
    materialization, stored once the asset body has returned, to the step's end.
    """
    times = {}
    for name, event_type, ascending in (
        ("run_start", DagsterEventType.RUN_START, True),
        ("step_start", DagsterEventType.STEP_START, True),
        ("first_materialization", DagsterEventType.ASSET_MATERIALIZATION, True),
        ("step_end", DagsterEventType.STEP_SUCCESS, False),
    ):
        records = instance.get_records_for_run(
            run_id, of_type=event_type, limit=1, ascending=ascending
        ).records
        if records:
            times[name] = records[0].timestamp
    breakdown = {}
    if "run_start" in times:
        breakdown["to_run_start"] = times["run_start"] - called_at
    if "step_start" in times and "step_end" in times:
        breakdown["step"] = times["step_end"] - times["step_start"]
    if job == "run_batch" and "first_materialization" in times and "step_end" in times:
        breakdown["after_asset"] = times["step_end"] - times["first_materialization"]
    return breakdown


def _outcome(job: str, run_id: str) -> dict:
    """Read the run's counts from the application database, without its per-center rows."""
    engine = create_database_engine(load_settings(DatabaseSettings).database_url)
    try:
        if job == "sync_centers":
            row = get_sync_run(engine, run_id) or {}
            names = ("status", "listed", "inserted", "updated", "unchanged", "skipped", "failed")
            return {name: row.get(name) for name in names}
        with engine.connect() as connection:
            row = connection.execute(
                select(batch_runs).where(batch_runs.c.run_id == run_id)
            ).mappings().first()
        names = ("status", "total_centers", "processed_centers", "successful_centers",
                 "failed_centers", "error")
        return {name: (row or {}).get(name) for name in names}
    finally:
        engine.dispose()


def _max_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    sys.exit(main())
