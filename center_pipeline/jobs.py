"""The jobs an operator or the schedule launches."""

from dagster import AssetSelection, define_asset_job

from center_pipeline.assets.events import center_events
from center_pipeline.assets.sync import center_details, center_slugs, centers

SYNC_ASSETS = AssetSelection.assets(center_slugs, center_details, centers)

sync_job = define_asset_job(
    "sync_centers",
    selection=SYNC_ASSETS,
    description="Fetch the slug list and every center's detail, then upsert the centers table.",
)

sync_and_run_job = define_asset_job(
    "sync_and_run",
    selection=SYNC_ASSETS,
    description=(
        "Sync the centers; when the sync succeeds, the batch_after_sync sensor launches "
        "run_batch over every active center."
    ),
)

batch_job = define_asset_job(
    "run_batch",
    selection=AssetSelection.assets(center_events),
    description="Find events for the selected centers in one run and write one CSV per center.",
)
