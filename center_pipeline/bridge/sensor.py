"""The `bridge_requests` sensor: turns each pending bridge request into Dagster runs.

Each request launches exactly once. Every run request carries a run key derived from the
request id, and the sensor daemon never launches a second run for a run key it has seen. The
sensor marks a request launched only on a later tick, once its runs exist in the instance; a
tick that crashes in between just emits the same run keys again.
"""

import logging
from dataclasses import replace
from datetime import UTC, datetime

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from sqlalchemy import Engine

from center_pipeline.bridge.planning import (
    NoCenters,
    SlugsRejected,
    build_run_requests,
    expected_run_count,
    plan_partition_ranges,
)
from center_pipeline.bridge.runs import request_runs
from center_pipeline.bridge.store import (
    BridgeRequest,
    RequestKind,
    mark_launched,
    mark_rejected,
    pending_requests,
    set_partition_ranges,
)
from center_pipeline.config import BridgeSettings, ConfigError, load_settings
from center_pipeline.db.resource import DatabaseResource
from center_pipeline.jobs import batch_job, sync_and_run_job, sync_job

logger = logging.getLogger(__name__)

SENSOR_NAME = "bridge_requests"
DEFAULT_INTERVAL_SECONDS = 10
# Requests handled per tick, so that a burst cannot make one evaluation run for minutes.
MAX_REQUESTS_PER_TICK = 50


def build_bridge_sensor() -> SensorDefinition:
    """Build the sensor, ticking every BRIDGE_SENSOR_INTERVAL_SECONDS (default on a bad value)."""
    try:
        interval = load_settings(BridgeSettings).bridge_sensor_interval_seconds
    except ConfigError as error:
        logger.error(
            "The %s sensor ticks every %d s: %s", SENSOR_NAME, DEFAULT_INTERVAL_SECONDS, error
        )
        interval = DEFAULT_INTERVAL_SECONDS

    @sensor(
        name=SENSOR_NAME,
        jobs=[sync_job, sync_and_run_job, batch_job],
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description="Launch the runs of each request that the REST bridge recorded.",
    )
    def bridge_requests(context: SensorEvaluationContext, database: DatabaseResource):
        return evaluate_pending_requests(context, database.engine)

    return bridge_requests


def evaluate_pending_requests(
    context: SensorEvaluationContext, engine: Engine
) -> SensorResult | SkipReason:
    """Emit the runs of each pending request, and mark those whose runs already exist."""
    pending = pending_requests(engine, limit=MAX_REQUESTS_PER_TICK)
    if not pending:
        return SkipReason("No pending bridge requests.")

    run_requests: list[RunRequest] = []
    for request in pending:
        run_requests.extend(_runs_to_launch(context, engine, request))
    if not run_requests:
        return SkipReason(f"Confirmed the launch of {len(pending)} pending bridge requests.")
    return SensorResult(run_requests=run_requests)


def _runs_to_launch(
    context: SensorEvaluationContext, engine: Engine, request: BridgeRequest
) -> list[RunRequest]:
    ranges = request.partition_ranges
    if request.kind is RequestKind.RUN_BATCH and ranges is None:
        try:
            ranges = plan_partition_ranges(context.instance, request.slugs)
        except (SlugsRejected, NoCenters) as error:
            mark_rejected(engine, request.request_id, str(error), _now())
            context.log.warning("Rejected bridge request %s: %s", request.request_id, error)
            return []
        # Fixed before the first launch, so that every later tick emits the same run keys.
        set_partition_ranges(engine, request.request_id, ranges)
        request = replace(request, partition_ranges=ranges)

    launched = request_runs(context.instance, request.request_id)
    if launched and len(launched) >= expected_run_count(request):
        run_ids = [run.run_id for run in launched]
        mark_launched(engine, request.request_id, run_ids, _now())
        context.log.info("Bridge request %s launched runs %s", request.request_id, run_ids)
        return []

    run_requests = build_run_requests(request, ranges)
    context.log.info(
        "Launching bridge request %s (%s) as %d runs",
        request.request_id,
        request.kind.value,
        len(run_requests),
    )
    return run_requests


def _now() -> datetime:
    return datetime.now(UTC)
