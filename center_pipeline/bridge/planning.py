"""Slug checks, partition ranges and run requests: the runs that a bridge request becomes.

A Dagster 1.13 run selects its partitions only through the tags of one partition key or of
one key range (`dagster/asset_partition_range_start` / `_end`), and asset backfills split a
subset into one run per contiguous range too. So a run-batch request for an arbitrary set of
slugs becomes one `run_batch` run per contiguous block of those slugs in the partition order.
"""

from collections.abc import Sequence

from dagster import DagsterInstance, RunRequest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from sqlalchemy import Engine

from center_pipeline.launch import RUN_DATE_TAG
from center_pipeline.bridge.store import BridgeRequest, RequestKind
from center_pipeline.db.centers import load_centers
from center_pipeline.partitions import center_partitions

# Links every run launched for a bridge request to that request.
REQUEST_TAG = "center_pipeline/bridge_request_id"

JOB_NAMES = {
    RequestKind.SYNC_CENTERS: "sync_centers",
    RequestKind.RUN_BATCH: "run_batch",
    RequestKind.SYNC_AND_RUN: "sync_and_run",
}


class SlugsRejected(Exception):
    """Raised when requested slugs are unknown, inactive or have no partition."""

    def __init__(self, problems: dict[str, str]):
        listed = "; ".join(f"{slug} ({reason})" for slug, reason in problems.items())
        super().__init__(f"{len(problems)} of the requested slugs cannot run: {listed}")
        self.problems = problems


class NoCenters(Exception):
    """Raised when a batch over every active center finds no center partitions."""

    def __init__(self) -> None:
        super().__init__(
            "No center partitions exist yet; sync the centers first (POST /cron/sync-centers)."
        )


def check_slugs(engine: Engine, instance: DagsterInstance, slugs: Sequence[str]) -> list[str]:
    """Return the slugs without duplicates, in request order, if every one can run now.

    Raises:
        SlugsRejected: naming each unknown or inactive slug, and each active one without a
            partition, with the reason.
    """
    unique = list(dict.fromkeys(slugs))
    stored = load_centers(engine, unique)
    partitions = set(instance.get_dynamic_partitions(center_partitions.name))
    problems: dict[str, str] = {}
    for slug in unique:
        center = stored.get(slug)
        if center is None:
            problems[slug] = "unknown slug; it is not in the centers table"
        elif not center.is_active:
            problems[slug] = f"the center is {center.status.value}, not active"
        elif slug not in partitions:
            problems[slug] = "the center has no partition of center_events; run a sync first"
    if problems:
        raise SlugsRejected(problems)
    return unique


def plan_partition_ranges(
    instance: DagsterInstance, slugs: Sequence[str] | None
) -> list[tuple[str, str]]:
    """Plan the partition key ranges of the requested slugs, or of every partition when None.

    Raises:
        SlugsRejected: a requested slug lost its partition since the request was accepted.
        NoCenters: slugs is None and no partition exists.
    """
    ordered = instance.get_dynamic_partitions(center_partitions.name)
    if slugs is None:
        if not ordered:
            raise NoCenters()
        return [(ordered[0], ordered[-1])]
    present = set(ordered)
    missing = {
        slug: "the center lost its partition (a sync deactivated or removed it)"
        for slug in slugs
        if slug not in present
    }
    if missing:
        raise SlugsRejected(missing)
    return contiguous_ranges(ordered, set(slugs))


def contiguous_ranges(ordered_keys: Sequence[str], wanted: set[str]) -> list[tuple[str, str]]:
    """Split the wanted keys into maximal blocks that are contiguous in `ordered_keys`."""
    ranges: list[tuple[str, str]] = []
    start: str | None = None
    previous: str | None = None
    for key in ordered_keys:
        if key in wanted:
            if start is None:
                start = key
            previous = key
        elif start is not None:
            ranges.append((start, previous))
            start = None
    if start is not None:
        ranges.append((start, previous))
    return ranges


def run_key(request_id: str, index: int) -> str:
    """Return the sensor run key of a request's run: the request id, then `id:1`, `id:2`, ..."""
    return request_id if index == 0 else f"{request_id}:{index}"


def expected_run_count(request: BridgeRequest) -> int:
    if request.kind is RequestKind.RUN_BATCH:
        return len(request.partition_ranges or ())
    return 1


def build_run_requests(
    request: BridgeRequest, ranges: Sequence[tuple[str, str]] | None
) -> list[RunRequest]:
    """Build the run requests of one bridge request; `ranges` is needed for run-batch only."""
    job_name = JOB_NAMES[request.kind]
    tags = {REQUEST_TAG: request.request_id}
    if request.kind is not RequestKind.RUN_BATCH:
        return [RunRequest(run_key=request.request_id, job_name=job_name, tags=tags)]

    if request.run_date is not None:
        tags[RUN_DATE_TAG] = request.run_date.isoformat()
    return [
        RunRequest(
            run_key=run_key(request.request_id, index),
            job_name=job_name,
            tags={
                **tags,
                ASSET_PARTITION_RANGE_START_TAG: first,
                ASSET_PARTITION_RANGE_END_TAG: last,
            },
        )
        for index, (first, last) in enumerate(ranges or ())
    ]
