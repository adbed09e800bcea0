"""The `center-pipeline` command: run the jobs, read a run's status, start the sample servers."""

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date

from dagster import DagsterInstance
from sqlalchemy import Engine

from center_pipeline.assets.events import FORCE_TAG
from center_pipeline.config import (
    ConfigError,
    DatabaseSettings,
    EventSettings,
    LlmSettings,
    LocationSettings,
    first_set_variable,
    load_dotenv_file,
    load_settings,
)
from center_pipeline.db.engine import (
    DatabaseUnavailable,
    describe_url,
    missing_sqlite_file,
    upgrade_database,
)
from center_pipeline.db.resource import engine_from_environment
from center_pipeline.db.schema import SchemaOutOfDate, SchemaState
from center_pipeline.events.resource import llm_key_variables, missing_api_key_error
from center_pipeline.launch import RUN_DATE_TAG, SYNC_RUN_TAG, all_centers_tags, resume_tags
from center_pipeline.runner import JobRun, execute_job, first_failure_message, open_instance
from center_pipeline.status import run_status_document

logger = logging.getLogger("center_pipeline.cli")

# Event searches for dates far from today make no sense and overflow the date window.
MAX_RUN_DATE_DISTANCE_DAYS = 366


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One INFO line per HTTP request, and Alembic's lines about Dagster's own storage, drown
    # the run's own log. Their warnings and errors still show.
    for noisy in ("httpx", "httpx2", "openai", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    load_dotenv_file()
    try:
        return args.handler(args)
    except (ConfigError, DatabaseUnavailable, SchemaOutOfDate) as error:
        print(f"error: {error}", file=sys.stderr)
        if getattr(args, "json", False):
            # Scripts that read --json get an object on stdout for these errors too.
            print(json.dumps({"error": str(error)}, indent=2))
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="center-pipeline",
        description="Sync the network's centers and find local events for each one.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="run the sync_centers job")
    batch = commands.add_parser("batch", help="run the run_batch job over every active center")
    both = commands.add_parser(
        "sync-and-run", help="sync, then run the batch if the sync succeeded"
    )
    demo = commands.add_parser(
        "demo", help="start the sample servers and run sync-and-run against them (no API keys)"
    )
    for command, handler in ((sync, _sync), (batch, _batch), (both, _sync_and_run), (demo, _demo)):
        command.add_argument("--json", action="store_true", help="print one JSON object at the end")
        command.set_defaults(handler=handler)
    for command in (batch, both, demo):
        command.add_argument(
            "--run-date",
            type=_run_date,
            help="the run date of the batch as YYYY-MM-DD (default: today)",
        )
    for command in (batch, both, demo):
        command.add_argument(
            "--force",
            action="store_true",
            help="call the LLM for every center, also those whose CSV for the run date an "
            f"earlier run wrote (sets the run tag {FORCE_TAG}=true)",
        )
    batch.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="re-execute a failed or killed batch run: same centers and run date, redoing "
        "only the centers that did not succeed",
    )

    status = commands.add_parser(
        "status", help="print the status of a batch or sync run, or of a bridge request"
    )
    status.add_argument("run_id", metavar="RUN_ID", help="a Dagster run id or a bridge request id")
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

    database = commands.add_parser("db", help="manage the application tables in DATABASE_URL")
    database_commands = database.add_subparsers(required=True, metavar="COMMAND")
    upgrade = database_commands.add_parser(
        "upgrade",
        help="create the tables, or upgrade them to this release's schema keeping their rows",
    )
    upgrade.set_defaults(handler=_db_upgrade)

    bridge = commands.add_parser(
        "bridge", help="serve the REST bridge; the Dagster daemon launches what it accepts"
    )
    bridge.add_argument("--host", help="address to listen on (default: BRIDGE_HOST or 127.0.0.1)")
    bridge.add_argument("--port", type=int, help="port (default: BRIDGE_PORT or 8080)")
    bridge.set_defaults(handler=_bridge)
    return parser


def _sync(args: argparse.Namespace) -> int:
    load_settings(LocationSettings)
    instance = open_instance()
    with _command_engine() as engine:
        sync = _run_sync(instance, "sync_centers")
        return _finish(args, instance, engine, sync, batch=None)


def _batch(args: argparse.Namespace) -> int:
    _check_batch_settings()
    instance = open_instance()
    with _command_engine() as engine:
        if args.resume:
            tags = resume_tags(instance, engine, args.resume)
            if args.force:
                tags[FORCE_TAG] = "true"
            batch = execute_job("run_batch", instance, tags=tags, progress_engine=engine)
        else:
            batch = _run_batch(instance, engine, args.run_date, sync_run_id=None, force=args.force)
        return _finish(args, instance, engine, sync=None, batch=batch)


def _sync_and_run(args: argparse.Namespace) -> int:
    # Checked first, so that a bad LLM setting does not surface only after a whole sync.
    load_settings(LocationSettings)
    _check_batch_settings()
    instance = open_instance()
    with _command_engine() as engine:
        sync = _run_sync(instance, "sync_and_run")
        batch = (
            _run_batch(instance, engine, args.run_date, sync.run_id, args.force)
            if sync.success
            else None
        )
        if not sync.success:
            print("The sync failed, so the batch was not started.", file=sys.stderr)
        return _finish(args, instance, engine, sync, batch)


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


def _check_batch_settings() -> None:
    """Raise the ConfigError that the batch run would raise at its start, before any run."""
    llm = load_settings(LlmSettings)
    load_settings(EventSettings)
    if first_set_variable(*llm_key_variables(llm.llm_provider)) is None:
        raise missing_api_key_error(llm.llm_provider)


def _run_sync(instance: DagsterInstance, job_name: str) -> JobRun:
    return execute_job(job_name, instance)


def _run_batch(
    instance: DagsterInstance,
    engine: Engine,
    run_date: str | None,
    sync_run_id: str | None,
    force: bool = False,
) -> JobRun | None:
    tags = all_centers_tags(instance)
    if tags is None:
        print("No center partitions exist yet; run `center-pipeline sync` first.", file=sys.stderr)
        return None
    if run_date:
        tags[RUN_DATE_TAG] = run_date
    if sync_run_id:
        tags[SYNC_RUN_TAG] = sync_run_id
    if force:
        tags[FORCE_TAG] = "true"
    return execute_job("run_batch", instance, tags=tags, progress_engine=engine)


def _finish(
    args: argparse.Namespace,
    instance: DagsterInstance,
    engine: Engine,
    sync: JobRun | None,
    batch: JobRun | None,
) -> int:
    report: dict = {}
    if sync is not None:
        report["sync_run_id"] = sync.run_id
        report["sync"] = run_status_document(engine, sync.run_id, instance) or {
            "dagster_status": "FAILURE" if not sync.success else "SUCCESS"
        }
        if not sync.success:
            report["sync_error"] = first_failure_message(sync)
    if batch is not None:
        report["batch_run_id"] = batch.run_id
        document = run_status_document(engine, batch.run_id, instance)
        # A batch that failed before its first step left no batch_runs row.
        report["batch"] = document if document and document.get("kind") == "batch" else None
        report["batch_status"] = (report["batch"] or {}).get("status", "failed")
        if not batch.success:
            report["batch_error"] = first_failure_message(batch)

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
            rejected = sync["details"].get("partitions_rejected", {})
            for slug, reason in list(rejected.items())[:10]:
                print(f"  no partition, so no events for {slug}: {reason}")
        else:
            print(f"Sync run {report['sync_run_id']} failed.")

    batch = report.get("batch")
    if batch is not None:
        output_dir = load_settings(EventSettings).events_output_dir
        carried_over = sum(1 for result in batch["results"] if result.get("carried_over_from"))
        written = batch["successful_centers"] - carried_over
        kept = f", {carried_over} kept from an earlier run of that day" if carried_over else ""
        print(
            f"Batch run {report['batch_run_id']}: {batch['status']}. "
            f"{batch['successful_centers']} of {batch['total_centers']} centers succeeded; "
            f"{written} CSVs written under {os.path.abspath(output_dir)}{kept} "
            f"(run date {batch['run_date']})."
        )
        if carried_over:
            print("  Use --force to call the LLM again for the centers kept.")
        for result in batch["results"]:
            if result["status"] != "success":
                print(f"  failed  {result['slug']}: {result['error']}")
    elif "batch_run_id" in report:
        print(f"Batch run {report['batch_run_id']} failed before it started.")
    for key in ("sync_error", "batch_error"):
        if report.get(key):
            print(f"error: {report[key]}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    url = load_settings(DatabaseSettings).database_url
    missing = missing_sqlite_file(url)
    if missing is not None:
        # Opening it would create an empty database here and report the run as unknown.
        print(
            f"error: no application database at {missing} (DATABASE_URL={url}). Run the "
            "command in the folder that holds the pipeline's stage.db, or set DATABASE_URL.",
            file=sys.stderr,
        )
        return 1
    instance = open_instance() if os.environ.get("DAGSTER_HOME") else None
    with _command_engine() as engine:
        document = run_status_document(engine, args.run_id, instance)
    if document is None:
        print(
            f"error: no run or bridge request with id {args.run_id!r}. The job commands print "
            "their run ids, and the Dagster UI lists every run under Runs.",
            file=sys.stderr,
        )
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
    elif document["kind"] == "request":
        runs = ", ".join(document["run_ids"]) or "none yet"
        print(
            f"Bridge request {args.run_id} ({document['request_kind']}): {document['status']}; "
            f"runs: {runs}."
        )
        if document["detail"]:
            print(f"  {document['detail']}")
    elif document["kind"] == "run":
        print(
            f"{document['job_name']} run {args.run_id}: {document['status']} "
            f"({document['dagster_status']}); it has written no batch or sync record."
        )
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


def _bridge(args: argparse.Namespace) -> int:
    from center_pipeline.bridge.server import serve

    serve(host=args.host, port=args.port)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    url = load_settings(DatabaseSettings).database_url
    change = upgrade_database(url)
    where = describe_url(url)
    if change.state is SchemaState.EMPTY:
        print(f"Created the application tables in {where} at revision {change.after}.")
    elif change.state is SchemaState.PREVIOUS_RELEASE:
        print(f"Upgraded {where} from the release before migrations to revision {change.after}.")
    elif change.before != change.after:
        print(f"Upgraded {where} from revision {change.before} to {change.after}.")
    else:
        print(f"{where} is already at revision {change.after}; nothing to do.")
    return 0


def _run_date(text: str) -> str:
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD") from None
    today = date.today()
    if abs((value - today).days) > MAX_RUN_DATE_DISTANCE_DAYS:
        raise argparse.ArgumentTypeError(
            f"{text} is more than a year from today ({today}); give a date within a year"
        )
    return value.isoformat()


@contextmanager
def _command_engine() -> Iterator[Engine]:
    """Create one engine for the whole command, so an unreachable database costs one timeout."""
    engine = engine_from_environment()
    try:
        yield engine
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
