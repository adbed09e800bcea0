"""Assets that keep the `centers` table in step with the location APIs."""

from datetime import UTC, datetime

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from center_pipeline.db.batch_runs import record_sync_run
from center_pipeline.db.centers import active_center_slugs, deactivate_unlisted, upsert_centers
from center_pipeline.db.resource import DatabaseResource
from center_pipeline.locations.fetch import FetchOutcome, fetch_centers
from center_pipeline.locations.resource import LocationApiResource
from center_pipeline.partitions import sync_center_partitions
from center_pipeline.reporting import markdown_reasons

GROUP = "centers"

# Max rejected slugs logged one by one in the run log. `sync_runs` records all of them.
LOGGED_REJECTIONS_MAX = 20


@asset(group_name=GROUP, kinds={"api"})
def center_slugs(
    context: AssetExecutionContext, location_api: LocationApiResource
) -> MaterializeResult:
    """Every center slug the network's slug API lists, in its order, without duplicates."""
    settings = location_api.settings()
    context.log.info("Fetching the slug list from %s", settings.location_slug_api_url)

    with location_api.open_client(settings) as client:
        slugs = client.fetch_slugs()

    context.log.info("The slug API listed %d centers", len(slugs))
    return MaterializeResult(
        value=slugs,
        metadata={"slug_count": len(slugs), "first_slugs": MetadataValue.json(slugs[:10])},
    )


@asset(group_name=GROUP, kinds={"api"})
def center_details(
    context: AssetExecutionContext, location_api: LocationApiResource, center_slugs: list[str]
) -> MaterializeResult:
    """Each listed center's normalized detail, with the reason for every slug left out."""
    settings = location_api.settings()
    context.log.info(
        "Fetching %d center details from %s, %d at a time",
        len(center_slugs),
        settings.location_data_api_url,
        settings.location_api_concurrency,
    )

    with location_api.open_client(settings) as client:
        outcome = fetch_centers(
            client,
            center_slugs,
            concurrency=settings.location_api_concurrency,
            default_radius_miles=settings.default_radius_miles,
            on_progress=_log_every_tenth(context),
            requests_per_second=settings.location_api_requests_per_second,
        )

    context.log.info(
        "Fetched %d centers; %d skipped, %d failed",
        len(outcome.centers),
        len(outcome.skipped),
        len(outcome.failed),
    )
    return MaterializeResult(
        value=outcome,
        metadata={
            "fetched": len(outcome.centers),
            "skipped": len(outcome.skipped),
            "failed": len(outcome.failed),
            "skipped_reasons": MetadataValue.md(markdown_reasons(outcome.skipped)),
            "failed_reasons": MetadataValue.md(markdown_reasons(outcome.failed)),
        },
    )


@asset(group_name=GROUP, kinds={"sql"})
def centers(
    context: AssetExecutionContext,
    database: DatabaseResource,
    center_slugs: list[str],
    center_details: FetchOutcome,
) -> MaterializeResult:
    """The `centers` table: listed centers upserted, unlisted ones made inactive, never deleted.

    Also sets the partitions of `center_events` to the active centers' slugs.
    """
    started_at = datetime.now(UTC)

    upserted = upsert_centers(database.engine, center_details.centers, started_at)
    for slug, reason in upserted.conflicts.items():
        context.log.warning("Center %r not stored: %s", slug, reason)

    deactivated = deactivate_unlisted(database.engine, center_slugs, started_at)
    if deactivated:
        context.log.info("Deactivated %d centers the slug API no longer lists", len(deactivated))

    active_slugs = active_center_slugs(database.engine)
    partitions = sync_center_partitions(context.instance, active_slugs)
    context.log.info(
        "Partitions: %d added, %d removed, %d active centers without a usable key",
        len(partitions.added),
        len(partitions.removed),
        len(partitions.rejected),
    )
    for slug, problem in list(partitions.rejected.items())[:LOGGED_REJECTIONS_MAX]:
        context.log.warning("Center %r gets no partition and no events: %s", slug, problem)

    failed = {**center_details.failed, **upserted.conflicts}
    counts = {
        "listed": len(center_slugs),
        "inserted": len(upserted.inserted),
        "updated": len(upserted.updated),
        "unchanged": len(upserted.unchanged),
        "deactivated": len(deactivated),
        "skipped": len(center_details.skipped),
        "failed": len(failed),
    }
    record_sync_run(
        database.engine,
        context.run.run_id,
        {
            "status": "completed",
            **counts,
            "details": {
                "failed": failed,
                "skipped": center_details.skipped,
                "deactivated": deactivated,
                "partitions_rejected": partitions.rejected,
            },
            "started_at": started_at,
            "completed_at": datetime.now(UTC),
        },
    )
    context.log.info(
        "Sync done: %(listed)d listed, %(inserted)d inserted, %(updated)d updated, "
        "%(unchanged)d unchanged, %(deactivated)d deactivated, %(skipped)d skipped, "
        "%(failed)d failed",
        counts,
    )
    return MaterializeResult(
        metadata={
            **counts,
            "active_centers": len(active_slugs),
            "partitions_added": len(partitions.added),
            "partitions_removed": len(partitions.removed),
            "partitions_rejected": len(partitions.rejected),
            "failed_reasons": MetadataValue.md(markdown_reasons(failed)),
            "deactivated_slugs": MetadataValue.json(deactivated[:100]),
        }
    )


def _log_every_tenth(context: AssetExecutionContext):
    def log_progress(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done % step == 0:
            context.log.info("Fetched %d of %d details", done, total)

    return log_progress
