"""The nightly schedule, built from CRON_SCHEDULE, CRON_TIMEZONE and CRON_ENABLED."""

import logging

from dagster import DefaultScheduleStatus, ScheduleDefinition
from dagster._core.errors import DagsterInvalidDefinitionError

from center_pipeline.config import ConfigError, ScheduleSettings, load_settings
from center_pipeline.jobs import sync_and_run_job

logger = logging.getLogger(__name__)

DEFAULT_CRON = "0 2 * * *"


def build_nightly_schedule() -> ScheduleDefinition:
    """Build the sync-and-run schedule. A bad setting stops it, and its description names why."""
    problem = None
    try:
        settings = load_settings(ScheduleSettings)
        cron, timezone, enabled = (
            settings.cron_schedule,
            settings.cron_timezone,
            settings.cron_enabled,
        )
    except ConfigError as error:
        problem = str(error)
        cron, timezone, enabled = DEFAULT_CRON, "UTC", False

    if problem is None:
        try:
            return _schedule(cron, timezone, enabled, "Sync the centers and run the batch.")
        except DagsterInvalidDefinitionError:
            problem = (
                f"Invalid configuration: CRON_SCHEDULE={cron!r} is not a valid cron string. "
                f"Example: CRON_SCHEDULE={DEFAULT_CRON}"
            )
            cron, enabled = DEFAULT_CRON, False

    logger.error("The nightly schedule is stopped: %s", problem)
    return _schedule(cron, timezone, enabled, f"Stopped because of a bad setting. {problem}")


def _schedule(cron: str, timezone: str, enabled: bool, description: str) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="nightly_sync_and_run",
        job=sync_and_run_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.RUNNING if enabled else DefaultScheduleStatus.STOPPED,
        description=description,
    )
