"""The jobs an operator or the schedule launches."""

from dagster import AssetSelection, define_asset_job

from center_pipeline.assets.events import center_events
from center_pipeline.assets.sync import center_details, center_slugs, centers

SYNC_ASSETS = AssetSelection.assets(center_slugs, center_details, centers)

# Every job that writes or reads the centers table carries this tag. The production run
# queue (deploy/dagster-postgres.yaml) allows one run with it at a time, so a sync never
# changes the table while a batch reads it. Runs executed in-process by the CLI skip the queue.
CENTERS_TABLE_TAG = "center_pipeline/centers_table"
SYNC_TAGS = {CENTERS_TABLE_TAG: "write"}
BATCH_TAGS = {CENTERS_TABLE_TAG: "read"}

sync_job = define_asset_job(
    "sync_centers",
    selection=SYNC_ASSETS,
    tags=SYNC_TAGS,
    description="Fetch the slug list and every center's detail, then upsert the centers table.",
)

sync_and_run_job = define_asset_job(
    "sync_and_run",
    selection=SYNC_ASSETS,
    tags=SYNC_TAGS,
    description=(
        "Sync the centers; when the sync succeeds, the batch_after_sync sensor launches "
        "run_batch over every active center."
    ),
)

batch_job = define_asset_job(
    "run_batch",
    selection=AssetSelection.assets(center_events),
    tags=BATCH_TAGS,
    description="Find events for the selected centers in one run and write one CSV per center.",
)
