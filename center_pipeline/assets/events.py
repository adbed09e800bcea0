"""The `center_events` asset: one CSV of upcoming local events per active center."""

import logging
import warnings
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from dagster import (
    AssetExecutionContext,
    BetaWarning,
    AssetObservation,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunsFilter,
    asset,
)
from dagster._core.storage.tags import ROOT_RUN_ID_TAG

from center_pipeline.assets.sync import centers
from center_pipeline.config import EventSettings, ScheduleSettings, load_settings
from center_pipeline.db.batch_runs import (
    CenterResult,
    RunStatus,
    batch_totals,
    finish_batch_run,
    record_center_result,
    start_batch_run,
    successful_results,
)
from center_pipeline.db.centers import load_centers
from center_pipeline.db.resource import DatabaseResource
from center_pipeline.events.batch import BatchOptions, CenterOutcome, run_batch
from center_pipeline.events.models import Event
from center_pipeline.events.pricing import price_for_model
from center_pipeline.events.resource import LlmResource
from center_pipeline.events.tracking import Heartbeat, fail_abandoned_batch_runs
from center_pipeline.launch import RUN_DATE_TAG
from center_pipeline.locations.models import Center
from center_pipeline.partitions import center_partitions
from center_pipeline.reporting import markdown_reasons

logger = logging.getLogger(__name__)

# BackfillPolicy is beta in Dagster 1.13. The single-run batch depends on it on purpose, so
# its warning would only repeat on every import.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)

# Up to this many centers, each center gets a run-log line and an asset observation with
# its metadata. Larger batches keep per-center events for failures only, because the
# instance stores each event with its own write (about 18 a second on dagster-postgres on
# 2 cores, measured by benchmarks/sync_and_batch.py).
DETAILED_LOG_MAX_CENTERS = 1000

# With the value "true", a batch calls the LLM for every selected center, also for those
# whose CSV for the run date an earlier run already wrote. `center-pipeline batch --force`
# sets it. In the UI, add it as a tag in the launchpad before materializing.
FORCE_TAG = "center_pipeline/force"


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
        requests_per_minute=llm_settings.llm_requests_per_minute,
        price=price_for_model(llm_settings.model, llm_settings.llm_prices),
    )

    stale_after = timedelta(seconds=settings.batch_stale_after_seconds)
    fail_abandoned_batch_runs(database.engine, context.instance, stale_after)
    start_batch_run(database.engine, context.run.run_id, options.run_date, len(slugs), _now())
    context.log.info(
        "Finding events for %d centers with %s (web search %s), %d at a time, run date %s, "
        "window %d days",
        len(slugs),
        llm_settings.model,
        "on" if llm_settings.llm_web_search else "off",
        options.concurrency,
        options.run_date,
        options.window_days,
    )

    tally = _BatchTally(context, database, total=len(slugs))
    heartbeat = Heartbeat(database.engine, context.run.run_id, settings.batch_heartbeat_seconds)
    try:
        with heartbeat:
            done_before = _results_of_earlier_attempts(context, database, options.run_date)
            for result in done_before.values():
                tally.record(CenterOutcome(result=result))
            stored = load_centers(
                database.engine, [slug for slug in slugs if slug not in done_before]
            )
            runnable = _runnable_centers(stored, slugs, done_before, tally)
            run_batch(runnable, client, options, tally.record)
    except BaseException as error:
        finish_batch_run(database.engine, context.run.run_id, RunStatus.FAILED, _now(), repr(error))
        raise

    status = RunStatus.FAILED if slugs and tally.succeeded == 0 else RunStatus.COMPLETED
    finish_batch_run(
        database.engine, context.run.run_id, status, _now(), tally.error_summary(status)
    )
    totals = tally.totals()
    context.log.info(
        "Batch %s: %d of %d centers succeeded (%d carried over), %d events kept, %d dropped "
        "(%d unsourced), %d tool calls, estimated cost %s, CSVs under %s",
        status.value,
        tally.succeeded,
        len(slugs),
        totals["carried_over_centers"],
        tally.events_kept,
        tally.events_dropped,
        totals["dropped_unsourced"],
        totals["tool_calls"],
        _usd(totals["cost_usd"]),
        options.output_dir,
    )

    metadata = tally.metadata(status, options, llm_settings.model, llm_settings.llm_web_search)
    if status is RunStatus.FAILED:
        raise Failure(description=tally.error_summary(status), metadata=metadata)
    return MaterializeResult(metadata=metadata)


class _BatchTally:
    """Records each center's result in the database and the run log, and sums the batch."""

    def __init__(self, context: AssetExecutionContext, database: DatabaseResource, total: int):
        self._context = context
        self._database = database
        self._total = total
        self._detailed = total <= DETAILED_LOG_MAX_CENTERS
        self.processed = 0
        self.succeeded = 0
        self.events_kept = 0
        self.events_dropped = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.failures: dict[str, str] = {}
        self.csv_paths: list[str] = []
        self.preview: tuple[Event, ...] = ()
        self._results: list[dict] = []

    def record(self, outcome: CenterOutcome) -> None:
        result = outcome.result
        record_center_result(self._database.engine, self._context.run.run_id, result, _now())
        self._results.append(asdict(result))
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
            carried_over = result.carried_over_from
            # Every event in the run log is a write to the instance's storage, so a large
            # batch logs successes to the process log and its progress to the run log.
            log = self._context.log if self._detailed else logger
            log.info(
                "[%d/%d] %s: %d events, %d dropped, %s, %s",
                self.processed,
                self._total,
                result.slug,
                result.events_found,
                result.events_dropped,
                result.csv_path,
                f"carried over from run {carried_over}"
                if carried_over
                else f"{result.tool_calls} tool calls, cost {_usd(result.cost_usd)}",
            )
        else:
            self.failures[result.slug] = result.error or "unknown error"
            self._context.log.warning(
                "[%d/%d] %s failed: %s", self.processed, self._total, result.slug, result.error
            )
        if self._detailed or not result.succeeded:
            self._context.log_event(
                AssetObservation(
                    asset_key=self._context.asset_key,
                    partition=result.slug,
                    metadata=_center_metadata(result),
                )
            )
        elif self.processed % max(1, self._total // 20) == 0 or self.processed == self._total:
            self._context.log.info("%d of %d centers done", self.processed, self._total)

    def error_summary(self, status: RunStatus) -> str | None:
        if not self.failures:
            return None
        first_slug, first_reason = next(iter(self.failures.items()))
        prefix = "No center succeeded" if status is RunStatus.FAILED else "Some centers failed"
        return f"{prefix}: {len(self.failures)} failed; first: {first_slug}: {first_reason}"

    def totals(self) -> dict:
        """Tokens, tool calls, cost and counts summed as the batch document sums them."""
        return batch_totals(self._results)

    def metadata(
        self, status: RunStatus, options: BatchOptions, model: str, web_search: bool
    ) -> dict:
        totals = self.totals()
        cost = totals["cost_usd"]
        return {
            "batch_status": status.value,
            "run_date": options.run_date.isoformat(),
            "centers": self._total,
            "succeeded": self.succeeded,
            "failed": len(self.failures),
            "events_kept": self.events_kept,
            "events_dropped": self.events_dropped,
            "model": model,
            "web_search": web_search,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "tool_calls": totals["tool_calls"],
            "cost_usd": MetadataValue.float(cost) if cost is not None else MetadataValue.null(),
            "unpriced_centers": totals["unpriced_centers"],
            "dropped_unsourced": totals["dropped_unsourced"],
            "carried_over": totals["carried_over_centers"],
            "output_dir": MetadataValue.path(str(options.output_dir)),
            "csv_paths": MetadataValue.json(self.csv_paths[:100]),
            "failed_reasons": MetadataValue.md(markdown_reasons(self.failures)),
            "preview": MetadataValue.md(_markdown_preview(self.preview)),
        }


def _results_of_earlier_attempts(
    context: AssetExecutionContext, database: DatabaseResource, run_date: date
) -> dict[str, CenterResult]:
    """Successful results of earlier runs for the same day, which this run carries over.

    Two kinds of earlier results count:
    - Re-execution: a run with the tag `dagster/root_run_id` (a re-execution from the UI,
      or `center-pipeline batch --resume`) takes the successes of its group of runs, so a
      batch that died halfway redoes only its unfinished centers.
    - Freshness: unless the run has the tag `center_pipeline/force=true`, it takes each
      success of any earlier batch run whose CSV file still exists, so a re-run of a partly
      failed day pays only for the centers that failed.
    A carried-over result records no tokens, tool calls or cost, because this run makes no
    LLM call for it, and `carried_over_from` names the run that made the call.
    """
    selected = set(context.partition_keys)
    done: dict[str, CenterResult] = {}
    root_run_id = context.run.tags.get(ROOT_RUN_ID_TAG)
    if root_run_id:
        group = {
            root_run_id,
            *context.instance.get_run_ids(RunsFilter(tags={ROOT_RUN_ID_TAG: root_run_id})),
        }
        group.discard(context.run.run_id)
        in_group = successful_results(database.engine, sorted(group), run_date)
        done = {slug: result for slug, result in in_group.items() if slug in selected}
        if done:
            context.log.info(
                "Re-execution of %s: %d centers already succeeded on %s and are not redone",
                root_run_id,
                len(done),
                run_date,
            )

    if _forced(context):
        context.log.info(
            "Run tag %s=true: calling the LLM for every center that this run's re-execution "
            "group has not finished, even if its CSV for %s exists",
            FORCE_TAG,
            run_date,
        )
    else:
        earlier = successful_results(
            database.engine, None, run_date, exclude_run_id=context.run.run_id
        )
        fresh = {
            slug: result
            for slug, result in earlier.items()
            if slug in selected
            and slug not in done
            and result.csv_path
            and Path(result.csv_path).is_file()
        }
        done.update(fresh)
        if fresh:
            context.log.info(
                "%d centers already have a CSV for %s from an earlier run and are skipped. "
                "Set the run tag %s=true (or pass --force) to redo them.",
                len(fresh),
                run_date,
                FORCE_TAG,
            )
    return {
        slug: replace(
            result, prompt_tokens=0, completion_tokens=0, tool_calls=0, cost_usd=0.0
        )
        for slug, result in done.items()
    }


def _forced(context: AssetExecutionContext) -> bool:
    value = context.run.tags.get(FORCE_TAG)
    if value is None or value.strip().lower() == "false":
        return False
    if value.strip().lower() == "true":
        return True
    raise Failure(f"Run tag {FORCE_TAG}={value!r} is invalid. Use true or false.")


def _runnable_centers(
    stored: dict[str, Center],
    slugs: list[str],
    done_before: dict[str, CenterResult],
    tally: _BatchTally,
) -> list[Center]:
    runnable = []
    for slug in slugs:
        if slug in done_before:
            continue
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
                f"Run tag {RUN_DATE_TAG}={tagged!r} is not a date; use YYYY-MM-DD, e.g. 2026-12-04."
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
        "tool_calls": result.tool_calls,
        "cost_usd": (
            MetadataValue.float(result.cost_usd)
            if result.cost_usd is not None
            else MetadataValue.null()
        ),
        "dropped_unsourced": result.dropped_unsourced,
        "carried_over_from": result.carried_over_from or "",
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


def _usd(cost: float | None) -> str:
    return "unknown (no price for the model)" if cost is None else f"${cost:.4f}"


def _now() -> datetime:
    return datetime.now(UTC)
