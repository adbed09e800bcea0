"""The `center_events` asset: one CSV of upcoming local events per active center."""

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from dagster import (
    AssetExecutionContext,
    AssetObservation,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from center_pipeline.assets.sync import centers
from center_pipeline.config import EventSettings, ScheduleSettings, load_settings
from center_pipeline.db.batch_runs import (
    CenterResult,
    RunStatus,
    finish_batch_run,
    record_center_result,
    start_batch_run,
)
from center_pipeline.db.centers import load_centers
from center_pipeline.db.resource import DatabaseResource
from center_pipeline.events.batch import BatchOptions, CenterOutcome, run_batch
from center_pipeline.events.models import Event
from center_pipeline.events.resource import LlmResource
from center_pipeline.events.tracking import fail_abandoned_batch_runs
from center_pipeline.locations.models import Center
from center_pipeline.partitions import center_partitions
from center_pipeline.reporting import markdown_reasons

# A run tag that pins the run date, so a day can be re-run later; the format is YYYY-MM-DD.
RUN_DATE_TAG = "center_pipeline/run_date"


@asset(
    group_name="events",
    partitions_def=center_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[centers],
    kinds={"openai", "csv"},
)
def center_events(
    context: AssetExecutionContext, database: DatabaseResource, llm: LlmResource
) -> MaterializeResult:
    """Upcoming local events for each selected center, written as one CSV per center.

    A run over many partitions records every center in `batch_runs` as it finishes. A
    center that fails keeps its earlier CSV and never fails the others; the run fails only
    when no center succeeds.
    """
    slugs = list(context.partition_keys)
    settings = load_settings(EventSettings)
    llm_settings = llm.settings()
    client = llm.create_client(llm_settings)
    options = BatchOptions(
        run_date=_run_date(context),
        window_days=settings.event_window_days,
        output_dir=Path(settings.events_output_dir),
        concurrency=llm_settings.llm_concurrency,
    )

    fail_abandoned_batch_runs(database.engine, context.instance)
    start_batch_run(database.engine, context.run.run_id, options.run_date, len(slugs), _now())
    context.log.info(
        "Finding events for %d centers with %s, %d at a time, run date %s, window %d days",
        len(slugs),
        llm_settings.model,
        options.concurrency,
        options.run_date,
        options.window_days,
    )

    tally = _BatchTally(context, database, total=len(slugs))
    try:
        stored = load_centers(database.engine, slugs)
        runnable = _runnable_centers(slugs, stored, tally)
        run_batch(runnable, client, options, tally.record)
    except BaseException as error:
        finish_batch_run(database.engine, context.run.run_id, RunStatus.FAILED, _now(), repr(error))
        raise

    status = RunStatus.FAILED if slugs and tally.succeeded == 0 else RunStatus.COMPLETED
    finish_batch_run(database.engine, context.run.run_id, status, _now(), tally.error_summary(status))
    context.log.info(
        "Batch %s: %d of %d centers succeeded, %d events kept, %d dropped, CSVs under %s",
        status.value,
        tally.succeeded,
        len(slugs),
        tally.events_kept,
        tally.events_dropped,
        options.output_dir,
    )

    metadata = tally.metadata(status, options, llm_settings.model)
    if status is RunStatus.FAILED:
        raise Failure(description=tally.error_summary(status), metadata=metadata)
    return MaterializeResult(metadata=metadata)


class _BatchTally:
    """Records each center's result in the database and the run log, and sums the batch."""

    def __init__(self, context: AssetExecutionContext, database: DatabaseResource, total: int):
        self._context = context
        self._database = database
        self._total = total
        self.processed = 0
        self.succeeded = 0
        self.events_kept = 0
        self.events_dropped = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.failures: dict[str, str] = {}
        self.csv_paths: list[str] = []
        self.preview: tuple[Event, ...] = ()

    def record(self, outcome: CenterOutcome) -> None:
        result = outcome.result
        record_center_result(self._database.engine, self._context.run.run_id, result, _now())
        self.processed += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        if result.succeeded:
            self.succeeded += 1
            self.events_kept += result.events_found
            self.events_dropped += result.events_dropped
            self.csv_paths.append(result.csv_path or "")
            if not self.preview and outcome.preview:
                self.preview = outcome.preview
            self._context.log.info(
                "[%d/%d] %s: %d events, %d dropped, %s",
                self.processed, self._total, result.slug, result.events_found,
                result.events_dropped, result.csv_path,
            )
        else:
            self.failures[result.slug] = result.error or "unknown error"
            self._context.log.warning(
                "[%d/%d] %s failed: %s", self.processed, self._total, result.slug, result.error
            )
        self._context.log_event(
            AssetObservation(
                asset_key=self._context.asset_key,
                partition=result.slug,
                metadata=_center_metadata(result),
            )
        )

    def error_summary(self, status: RunStatus) -> str | None:
        if not self.failures:
            return None
        first_slug, first_reason = next(iter(self.failures.items()))
        prefix = "No center succeeded" if status is RunStatus.FAILED else "Some centers failed"
        return f"{prefix}: {len(self.failures)} failed; first: {first_slug}: {first_reason}"

    def metadata(self, status: RunStatus, options: BatchOptions, model: str) -> dict:
        return {
            "batch_status": status.value,
            "run_date": options.run_date.isoformat(),
            "centers": self._total,
            "succeeded": self.succeeded,
            "failed": len(self.failures),
            "events_kept": self.events_kept,
            "events_dropped": self.events_dropped,
            "model": model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "output_dir": MetadataValue.path(str(options.output_dir)),
            "csv_paths": MetadataValue.json(self.csv_paths[:100]),
            "failed_reasons": MetadataValue.md(markdown_reasons(self.failures)),
            "preview": MetadataValue.md(_markdown_preview(self.preview)),
        }


def _runnable_centers(
    slugs: list[str], stored: dict[str, Center], tally: _BatchTally
) -> list[Center]:
    runnable = []
    for slug in slugs:
        center = stored.get(slug)
        if center is None:
            reason = "not in the centers table; run the sync first"
        elif not center.is_active:
            reason = f"the center is {center.status.value}, not active"
        else:
            runnable.append(center)
            continue
        tally.record(CenterOutcome(result=CenterResult(slug=slug, status="failed", error=reason)))
    return runnable


def _run_date(context: AssetExecutionContext) -> date:
    tagged = context.run.tags.get(RUN_DATE_TAG)
    if tagged:
        try:
            return date.fromisoformat(tagged)
        except ValueError:
            raise Failure(
                f"Run tag {RUN_DATE_TAG}={tagged!r} is not a date; use YYYY-MM-DD, "
                "e.g. 2026-12-04."
            ) from None
    timezone = load_settings(ScheduleSettings).cron_timezone
    return datetime.now(ZoneInfo(timezone)).date()


def _center_metadata(result: CenterResult) -> dict:
    return {
        "status": result.status,
        "events_found": result.events_found,
        "events_dropped": result.events_dropped,
        "csv_path": result.csv_path or "",
        "error": result.error or "",
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
    }


def _markdown_preview(events: tuple[Event, ...]) -> str:
    if not events:
        return "No events."
    columns = ("name", "date", "venue", "city", "state", "url")
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    rows = [
        "| " + " | ".join(_cell(getattr(event, column)) for column in columns) + " |"
        for event in events
    ]
    return "\n".join([header, *rows])


def _cell(value: object) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _now() -> datetime:
    return datetime.now(UTC)

