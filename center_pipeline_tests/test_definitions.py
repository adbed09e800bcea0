"""The code location loads under any environment, and the schedule follows CRON_* settings."""

import pytest
from dagster import DefaultScheduleStatus

from center_pipeline.dagster_env import apply_event_storage_defaults
from center_pipeline.definitions import build_definitions
from center_pipeline.partitions import partition_key_problem


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (
        "CRON_SCHEDULE",
        "CRON_ENABLED",
        "CRON_TIMEZONE",
        "LOCATION_SLUG_API_URL",
        "LLM_API_KEY",
        "OPENAI_API_KEY",
        "XAI_API_KEY",
        "DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_definitions_load_without_environment():
    defs = build_definitions()

    asset_keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert asset_keys == {"center_slugs", "center_details", "centers", "center_events"}
    for job_name in ("sync_centers", "run_batch", "sync_and_run"):
        assert defs.resolve_job_def(job_name) is not None
    assert defs.resolve_sensor_def("batch_after_sync") is not None
    schedule = defs.resolve_schedule_def("nightly_sync_and_run")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING


def test_schedule_follows_environment(monkeypatch):
    monkeypatch.setenv("CRON_SCHEDULE", "30 4 * * 1-5")
    monkeypatch.setenv("CRON_TIMEZONE", "America/Chicago")
    monkeypatch.setenv("CRON_ENABLED", "false")

    schedule = build_definitions().resolve_schedule_def("nightly_sync_and_run")

    assert schedule.cron_schedule == "30 4 * * 1-5"
    assert schedule.execution_timezone == "America/Chicago"
    assert schedule.default_status == DefaultScheduleStatus.STOPPED


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CRON_SCHEDULE", "every night at 2"),
        ("CRON_TIMEZONE", "Mars/Olympus"),
        ("CRON_ENABLED", "sometimes"),
    ],
)
def test_bad_schedule_setting_stops_schedule(monkeypatch, caplog, variable, value):
    monkeypatch.setenv(variable, value)

    schedule = build_definitions().resolve_schedule_def("nightly_sync_and_run")

    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert variable in schedule.description
    assert value in schedule.description
    assert value in caplog.text


@pytest.mark.parametrize(
    ("slug", "usable"),
    [
        ("austin-downtown", True),
        ("a/b", True),
        ("café-montréal", True),
        ("a,b", False),
        ("a...b", False),
        ("line\n", False),
        ("x" * 256, False),
        ("", False),
        ("[a]", False),
    ],
)
def test_partition_key_problem(slug, usable):
    assert (partition_key_problem(slug) is None) == usable


def test_event_storage_defaults_keep_operator_values():
    environ = {"DAGSTER_EVENT_BATCH_SIZE": "0"}

    applied = apply_event_storage_defaults(environ)

    assert applied == {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true"}
    assert environ == {
        "DAGSTER_EVENT_BATCH_SIZE": "0",
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
    }
