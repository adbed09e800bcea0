"""The document of `GET /cron/status`: the schedule, the daemon, the launch sensors, the queue."""

from datetime import UTC, datetime

from dagster import DagsterInstance, DefaultScheduleStatus
from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, InstigatorType
from dagster._utils.schedules import cron_string_iterator
from sqlalchemy import Engine

from center_pipeline.bridge.request_status import run_state
from center_pipeline.bridge.sensor import SENSOR_NAME
from center_pipeline.bridge.store import count_pending_requests, pending_requests
from center_pipeline.schedules import build_nightly_schedule

# The sensors that launch bridge work; each one is running unless stopped in the UI.
LAUNCH_SENSORS = (SENSOR_NAME, "batch_after_sync")
# Dagster 1.13 daemons write a heartbeat every 30 s (DEFAULT_HEARTBEAT_INTERVAL_SECONDS), so a
# daemon whose last heartbeat is older than three intervals is taken as dead.
HEARTBEAT_MAX_AGE_SECONDS = 90
MAX_PENDING_LISTED = 100


def cron_status_document(engine: Engine, instance: DagsterInstance, now: datetime) -> dict:
    pending = pending_requests(engine, limit=MAX_PENDING_LISTED)
    return {
        "schedule": schedule_status(instance, now),
        "daemon": daemon_status(instance, now),
        "sensors": [
            {"name": name, "state": _state_name(_stored_state(instance, name), True)}
            for name in LAUNCH_SENSORS
        ],
        "pending_count": count_pending_requests(engine),
        "pending_requests": [
            {
                "request_id": request.request_id,
                "request_kind": request.kind.value,
                "slugs": request.slugs,
                "created_at": request.created_at,
            }
            for request in pending
        ],
    }


def schedule_status(instance: DagsterInstance, now: datetime) -> dict:
    """Describe the nightly schedule as this process's settings define it, and its state.

    The cron string and time zone come from CRON_SCHEDULE and CRON_TIMEZONE here, so they
    match the daemon's only when both processes see the same environment.
    """
    definition = build_nightly_schedule()
    enabled = definition.default_status == DefaultScheduleStatus.RUNNING
    state = _stored_state(instance, definition.name)
    state_name = _state_name(state, enabled)

    next_tick = None
    if state_name == "running":
        ticks = cron_string_iterator(
            now.timestamp(), str(definition.cron_schedule), definition.execution_timezone
        )
        next_tick = next(ticks)
    return {
        "name": definition.name,
        "cron_schedule": str(definition.cron_schedule),
        "timezone": definition.execution_timezone or "UTC",
        "enabled": enabled,
        "description": definition.description,
        "state": state_name,
        "next_tick": next_tick,
        "last_tick": _last_tick(instance, state),
    }


def daemon_status(instance: DagsterInstance, now: datetime) -> dict:
    """Check whether each daemon that the instance needs has written a recent heartbeat."""
    heartbeats = instance.get_daemon_heartbeats()
    daemons = []
    for daemon_type in instance.get_required_daemon_types():
        heartbeat = heartbeats.get(daemon_type)
        last = datetime.fromtimestamp(heartbeat.timestamp, UTC) if heartbeat else None
        errors = (heartbeat.errors or []) if heartbeat else []
        daemons.append(
            {
                "daemon_type": daemon_type,
                "alive": last is not None
                and (now - last).total_seconds() <= HEARTBEAT_MAX_AGE_SECONDS,
                "last_heartbeat": last,
                "errors": [error.message for error in errors],
            }
        )
    return {
        "alive": bool(daemons) and all(daemon["alive"] for daemon in daemons),
        "heartbeat_max_age_seconds": HEARTBEAT_MAX_AGE_SECONDS,
        "daemons": daemons,
    }


def _stored_state(instance: DagsterInstance, name: str) -> InstigatorState | None:
    """Find the instance's state of the schedule or sensor `name`, if the daemon or UI wrote one.

    States are keyed by code location; a state set in the UI wins over one declared in code.
    """
    states = [
        state
        for instigator_type in (InstigatorType.SCHEDULE, InstigatorType.SENSOR)
        for state in instance.all_instigator_state(instigator_type=instigator_type)
        if state.name == name
    ]
    states.sort(key=lambda state: state.status == InstigatorStatus.DECLARED_IN_CODE)
    return states[0] if states else None


def _state_name(state: InstigatorState | None, running_by_default: bool) -> str:
    if state is None or state.status == InstigatorStatus.DECLARED_IN_CODE:
        return "running" if running_by_default else "stopped"
    return "running" if state.status == InstigatorStatus.RUNNING else "stopped"


def _last_tick(instance: DagsterInstance, state: InstigatorState | None) -> dict | None:
    if state is None:
        return None
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
    if not ticks:
        return None
    tick = ticks[0]
    runs = []
    for run_id in tick.run_ids:
        run = instance.get_run_by_id(run_id)
        runs.append(
            {
                "run_id": run_id,
                "status": run_state(run) if run else None,
                "dagster_status": run.status.value if run else None,
            }
        )
    return {
        "timestamp": datetime.fromtimestamp(tick.timestamp, UTC),
        "outcome": tick.status.value.lower(),
        "skip_reason": tick.skip_reason,
        "error": tick.error.message.strip() if tick.error else None,
        "runs": runs,
    }
