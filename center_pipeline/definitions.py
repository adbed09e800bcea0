"""The code location: every asset, job, schedule, sensor and resource of the project."""

import os

from dagster import Definitions, EnvVar

from center_pipeline.assets.events import center_events
from center_pipeline.assets.sync import center_details, center_slugs, centers
from center_pipeline.bridge.sensor import build_bridge_sensor
from center_pipeline.config import first_set_variable, load_dotenv_file
from center_pipeline.dagster_env import apply_event_storage_defaults
from center_pipeline.db.resource import DatabaseResource
from center_pipeline.events.resource import LlmResource, llm_key_variables
from center_pipeline.jobs import batch_job, sync_and_run_job, sync_job
from center_pipeline.locations.resource import LocationApiResource
from center_pipeline.schedules import build_nightly_schedule
from center_pipeline.sensors import batch_after_sync, fail_abandoned_batches


def _env_var_if_set(*names: str) -> EnvVar | None:
    """EnvVar for the first of `names` that is set, so the secret is read at launch."""
    name = first_set_variable(*names)
    return EnvVar(name) if name else None


def _llm_key_variables() -> tuple[str, ...]:
    return llm_key_variables(os.environ.get("LLM_PROVIDER", "openai").strip().lower())


def build_definitions() -> Definitions:
    load_dotenv_file()
    # Here, because every process that runs the project's code builds the definitions:
    # the run worker, the code server and the `center-pipeline` commands.
    apply_event_storage_defaults()
    return Definitions(
        assets=[center_slugs, center_details, centers, center_events],
        jobs=[sync_job, sync_and_run_job, batch_job],
        schedules=[build_nightly_schedule()],
        sensors=[batch_after_sync, fail_abandoned_batches, build_bridge_sensor()],
        resources={
            "location_api": LocationApiResource(api_key=_env_var_if_set("LOCATION_API_KEY")),
            "llm": LlmResource(api_key=_env_var_if_set(*_llm_key_variables())),
            "database": DatabaseResource(url=_env_var_if_set("DATABASE_URL")),
        },
    )


defs = build_definitions()
