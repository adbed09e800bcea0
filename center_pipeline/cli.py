"""The `center-pipeline` command: run the jobs, read a run's status, start the sample servers."""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from dagster import DagsterInstance

from center_pipeline.config import (
    ConfigError,
    DatabaseSettings,
    EventSettings,
    load_dotenv_file,
    load_settings,
)
from center_pipeline.db.engine import DatabaseUnavailable, create_database_engine
from center_pipeline.launch import SYNC_RUN_TAG, all_centers_tags
from center_pipeline.runner import JobRun, execute_job, open_instance
from center_pipeline.status import run_status_document

logger = logging.getLogger("center_pipeline.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One INFO line per HTTP request drowns the run's own log; errors still show.
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    load_dotenv_file()
    try:
        return args.handler(args)
    except (ConfigError, DatabaseUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="center-pipeline",
        description="Sync the network's centers and find local events for each one.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="run the sync_centers job")
    batch = commands.add_parser("batch", help="run the run_batch job over every active center")
    both = commands.add_parser("sync-and-run", help="sync, then run the batch if the sync succeeded")
    demo = commands.add_parser(
        "demo", help="start the sample servers and run sync-and-run against them (no API keys)"
    )
    for command, handler in ((sync, _sync), (batch, _batch), (both, _sync_and_run), (demo, _demo)):
        command.add_argument("--json", action="store_true", help="print one JSON object at the end")
        command.set_defaults(handler=handler)
    for command in (batch, both, demo):
        command.add_argument(
            "--run-date", help="the run date of the batch as YYYY-MM-DD (default: today)"
        )

    status = commands.add_parser("status", help="print the status of a batch or sync run")
    status.add_argument("run_id", metavar="RUN_ID", help="a Dagster run id")
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    status.set_defaults(handler=_status)

    servers = commands.add_parser(
        "sample-servers", help="serve the sample location API and LLM API on 127.0.0.1"
    )
    servers.add_argument("--location-port", type=int, default=8010, help="default: 8010")
    servers.add_argument("--llm-port", type=int, default=8011, help="default: 8011")
    servers.add_argument(
        "--latency-ms", type=int, default=0, help="delay added to every response, in ms"
    )
    servers.set_defaults(handler=_sample_servers)
    return parser


def _sync(args: argparse.Namespace) -> int:
    instance = open_instance()
    sync = _run_sync(instance, "sync_centers")
    return _finish(args, instance, sync, batch=None)


def _batch(args: argparse.Namespace) -> int:
    instance = open_instance()
    batch = _run_batch(instance, args.run_date, sync_run_id=None)
    return _finish(args, instance, sync=None, batch=batch)


def _sync_and_run(args: argparse.Namespace) -> int:
    instance = open_instance()
    sync = _run_sync(instance, "sync_and_run")
    batch = _run_batch(instance, args.run_date, sync.run_id) if sync.success else None
    if not sync.success:
        print("The sync failed, so the batch was not started.", file=sys.stderr)
    return _finish(args, instance, sync, batch)


def _demo(args: argparse.Namespace) -> int:
    from center_pipeline.sample_servers.server import SampleServers

    os.environ.setdefault("DAGSTER_HOME", os.path.abspath(".dagster_home"))
    with SampleServers() as servers:
        os.environ.update(servers.env())
        os.environ.pop("LOCATION_API_KEY", None)
        print(
            f"Sample servers: location API {servers.slug_api_url}, LLM {servers.llm_base_url}",
            file=sys.stderr,
        )
        return _sync_and_run(args)


def _run_sync(instance: DagsterInstance, job_name: str) -> JobRun:
    return execute_job(job_name, instance)


def _run_batch(instance: DagsterInstance, run_date: str | None, sync_run_id: str | None) -> JobRun | None:
    tags = all_centers_tags(instance)
    if tags is None:
        print("No center partitions exist yet; run `center-pipeline sync` first.", file=sys.stderr)
        return None
    if run_date:
        tags["center_pipeline/run_date"] = run_date
    if sync_run_id:
        tags[SYNC_RUN_TAG] = sync_run_id
    return execute_job("run_batch", instance, tags=tags, progress_engine=_engine())


def _finish(
    args: argparse.Namespace, instance: DagsterInstance, sync: JobRun | None, batch: JobRun | None
) -> int:
    engine = _engine()
    report: dict = {}
    if sync is not None:
        report["sync_run_id"] = sync.run_id
        report["sync"] = run_status_document(engine, sync.run_id, instance) or {
            "dagster_status": "FAILURE" if not sync.success else "SUCCESS"
        }
    if batch is not None:
        report["batch_run_id"] = batch.run_id
        report["batch"] = run_status_document(engine, batch.run_id, instance)
        report["batch_status"] = (report["batch"] or {}).get("status", "failed")

    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_summary(report)

    ran = [run for run in (sync, batch) if run is not None]
    return 0 if ran and all(run.success for run in ran) else 1


def _print_summary(report: dict) -> None:
    sync = report.get("sync")
    if sync is not None:
        if "listed" in sync:
            print(
                f"Sync run {report['sync_run_id']}: {sync['listed']} centers listed, "
                f"{sync['inserted']} inserted, {sync['updated']} updated, "
                f"{sync['unchanged']} unchanged, {sync['deactivated']} deactivated, "
                f"{sync['skipped']} skipped, {sync['failed']} failed."
            )
            for slug, reason in list(sync["details"].get("failed", {}).items())[:10]:
                print(f"  failed  {slug}: {reason}")
            for slug, reason in list(sync["details"].get("skipped", {}).items())[:10]:
                print(f"  skipped {slug}: {reason}")
        else:
            print(f"Sync run {report['sync_run_id']} failed; see `dagster dev` for its logs.")

    batch = report.get("batch")
    if batch is not None:
        output_dir = load_settings(EventSettings).events_output_dir
        print(
            f"Batch run {report['batch_run_id']}: {batch['status']}. "
            f"{batch['successful_centers']} of {batch['total_centers']} centers succeeded; "
            f"{batch['successful_centers']} CSVs written under {os.path.abspath(output_dir)} "
            f"(run date {batch['run_date']})."
        )
        for result in batch["results"]:
            if result["status"] != "success":
                print(f"  failed  {result['slug']}: {result['error']}")
    elif "batch_run_id" in report:
        print(f"Batch run {report['batch_run_id']} failed before it started; see its logs.")


def _status(args: argparse.Namespace) -> int:
    instance = open_instance() if os.environ.get("DAGSTER_HOME") else None
    document = run_status_document(_engine(), args.run_id, instance)
    if document is None:
        print(f"error: no batch or sync run with id {args.run_id!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(document, indent=2, default=str))
    elif document["kind"] == "batch":
        print(
            f"Batch run {args.run_id}: {document['status']}, {document['processed_centers']} of "
            f"{document['total_centers']} processed, {document['successful_centers']} succeeded, "
            f"{document['failed_centers']} failed."
        )
        for result in document["results"]:
            detail = result["csv_path"] if result["status"] == "success" else result["error"]
            print(f"  {result['status']:<8} {result['slug']}: {detail}")
    else:
        print(
            f"Sync run {args.run_id}: {document['status']}, {document['listed']} listed, "
            f"{document['inserted']} inserted, {document['updated']} updated, "
            f"{document['deactivated']} deactivated, {document['failed']} failed."
        )
    return 0


def _sample_servers(args: argparse.Namespace) -> int:
    from center_pipeline.sample_servers.faults import FaultPlan
    from center_pipeline.sample_servers.server import serve_forever

    latency = FaultPlan(latency_ms=args.latency_ms)
    serve_forever(
        location_port=args.location_port,
        llm_port=args.llm_port,
        location_faults=latency,
        llm_faults=latency,
    )
    return 0


def _engine():
    return create_database_engine(load_settings(DatabaseSettings).database_url)


if __name__ == "__main__":
    sys.exit(main())
