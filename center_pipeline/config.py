"""Settings read from the environment, one group per concern.

Each group is loaded when a run needs it, not when the code location loads, so a missing
or invalid value fails only the runs that use it. `load_settings` turns pydantic's
validation errors into a `ConfigError` that names each variable and shows a valid example.
"""

import json
import os
import re
from typing import Annotated, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from center_pipeline.events.pricing import ModelPrice


class ConfigError(Exception):
    """Raised when an environment variable is missing or invalid; the message gives the fix."""


def _example(value: str) -> dict:
    return {"example": value}


class _EnvSettings(BaseSettings):
    # Entry points load `.env` into os.environ first (see `load_dotenv_file`), so every
    # reader, Dagster's EnvVar included, sees the same values.
    model_config = SettingsConfigDict(extra="ignore", frozen=True)


def _blank_to_none(value: object) -> object:
    """Read an empty or blank variable as unset, as `LLM_REQUESTS_PER_MINUTE=` in `.env` is."""
    return None if isinstance(value, str) and not value.strip() else value


def _require_http_url(value: str) -> str:
    value = value.strip()
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class LocationSettings(_EnvSettings):
    """Location API endpoints, request limits and the default radius."""

    location_slug_api_url: str = Field(
        json_schema_extra=_example("https://locations.example.com/api/slugs")
    )
    location_data_api_url: str = Field(
        json_schema_extra=_example("https://locations.example.com/api/data")
    )
    default_radius_miles: float = Field(
        default=25.0, gt=0, le=500, json_schema_extra=_example("25")
    )
    location_api_concurrency: int = Field(
        default=16, ge=1, le=256, json_schema_extra=_example("16")
    )
    location_api_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, json_schema_extra=_example("10")
    )
    # Detail requests started per second, across all LOCATION_API_CONCURRENCY threads. Unset
    # means no limit.
    location_api_requests_per_second: float | None = Field(
        default=None, gt=0, le=10_000, json_schema_extra=_example("20")
    )

    @field_validator("location_api_requests_per_second", mode="before")
    @classmethod
    def _blank_rate_is_unset(cls, value: object) -> object:
        return _blank_to_none(value)

    @field_validator("location_slug_api_url", "location_data_api_url")
    @classmethod
    def _check_urls(cls, value: str) -> str:
        return _require_http_url(value)


class DatabaseSettings(_EnvSettings):
    """The application database that contains `centers` and `batch_runs`."""

    database_url: str = Field(
        default="sqlite:///stage.db",
        json_schema_extra=_example("postgresql://user@127.0.0.1:5432/centers"),
    )

    @field_validator("database_url")
    @classmethod
    def _check_scheme(cls, value: str) -> str:
        value = value.strip()
        # Heroku-style URLs start with postgres://, which SQLAlchemy does not accept.
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class LlmSettings(_EnvSettings):
    """The OpenAI-compatible model that finds events, and its request limits."""

    llm_provider: Literal["openai", "grok"] = Field(
        default="openai", json_schema_extra=_example("openai")
    )
    llm_model: str | None = Field(default=None, json_schema_extra=_example("gpt-4o-mini"))
    llm_base_url: str | None = Field(
        default=None, json_schema_extra=_example("http://127.0.0.1:8001/v1")
    )
    llm_concurrency: int = Field(default=8, ge=1, le=256, json_schema_extra=_example("8"))
    llm_timeout_seconds: float = Field(default=60.0, gt=0, le=600, json_schema_extra=_example("60"))
    # LLM calls started per minute, across all LLM_CONCURRENCY threads. Unset means no limit.
    llm_requests_per_minute: float | None = Field(
        default=None, gt=0, le=1_000_000, json_schema_extra=_example("500")
    )
    # Ground each center's events in a web search through the Responses API. OpenAI and xAI
    # both offer it. A server set by LLM_BASE_URL may not, and then each center fails with
    # a message that names this variable.
    llm_web_search: bool = Field(default=True, json_schema_extra=_example("true"))
    # USD prices by model name. They override and extend the built-in estimates in
    # `center_pipeline/events/pricing.py`.
    llm_prices: Annotated[dict[str, ModelPrice], NoDecode] = Field(
        default_factory=dict,
        json_schema_extra=_example(
            '\'{"gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6, '
            '"per_tool_call": 0.01}}\''
        ),
    )

    @field_validator("llm_requests_per_minute", mode="before")
    @classmethod
    def _blank_rate_is_unset(cls, value: object) -> object:
        return _blank_to_none(value)

    @field_validator("llm_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: object) -> object:
        """Read LLM_PRICES as a JSON object, naming the model and field of a bad entry."""
        value = _blank_to_none(value)
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as error:
                raise ValueError(f"must be a JSON object ({error})") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object that maps model names to prices")
        prices = {}
        for model, entry in value.items():
            try:
                prices[str(model)] = ModelPrice.model_validate(entry)
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in problem['loc']) or 'price'}: {problem['msg']}"
                    for problem in error.errors()
                )
                raise ValueError(f"the price of model {model!r} is invalid ({problems})") from None
        return prices

    @field_validator("llm_provider", mode="before")
    @classmethod
    def _lowercase_provider(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("llm_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        return _require_http_url(value) if value else None

    @property
    def model(self) -> str:
        """The model to call: `LLM_MODEL`, or the provider's default."""
        return self.llm_model or DEFAULT_MODELS[self.llm_provider]

    @property
    def base_url(self) -> str | None:
        """The API base URL: `LLM_BASE_URL`, or the provider's public endpoint."""
        return self.llm_base_url or DEFAULT_BASE_URLS[self.llm_provider]


DEFAULT_MODELS = {"openai": "gpt-4o-mini", "grok": "grok-3-mini"}
# None lets the openai SDK use its own default endpoint.
DEFAULT_BASE_URLS = {"openai": None, "grok": "https://api.x.ai/v1"}


class EventSettings(_EnvSettings):
    """Output folder and date window of the event CSVs, and the batch heartbeat."""

    events_output_dir: str = Field(default="data/events", json_schema_extra=_example("data/events"))
    event_window_days: int = Field(default=30, ge=1, le=366, json_schema_extra=_example("30"))
    batch_heartbeat_seconds: float = Field(
        default=15.0, gt=0, le=600, json_schema_extra=_example("15")
    )
    # A batch whose heartbeat is older than this is taken as dead and marked failed. Keep it
    # well above the heartbeat interval.
    batch_stale_after_seconds: float = Field(default=300.0, gt=0, json_schema_extra=_example("300"))


class ScheduleSettings(_EnvSettings):
    """When the nightly sync-and-run fires."""

    cron_schedule: str = Field(default="0 2 * * *", json_schema_extra=_example("0 2 * * *"))
    cron_enabled: bool = Field(default=True, json_schema_extra=_example("true"))
    cron_timezone: str = Field(default="UTC", json_schema_extra=_example("America/Chicago"))

    @field_validator("cron_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        value = value.strip()
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError("must be an IANA time zone name") from error
        return value


SettingsT = TypeVar("SettingsT", bound=_EnvSettings)


def load_settings(settings_class: type[SettingsT]) -> SettingsT:
    """Read one settings group from the environment.

    Raises:
        ConfigError: one line per bad variable, with the value given and a valid example.
    """
    try:
        return settings_class()
    except ValidationError as error:
        raise ConfigError(describe_validation_error(settings_class, error)) from None


def first_set_variable(*names: str) -> str | None:
    """Return the first of `names` that is set to a non-empty value, or None."""
    for name in names:
        if os.environ.get(name):
            return name
    return None


def describe_validation_error(settings_class: type[_EnvSettings], error: ValidationError) -> str:
    """Format pydantic errors as one actionable line per environment variable."""
    lines = []
    for problem in error.errors():
        field_name = str(problem["loc"][0]) if problem["loc"] else ""
        env_name = field_name.upper()
        field = settings_class.model_fields.get(field_name)
        extra = (
            field.json_schema_extra if field and isinstance(field.json_schema_extra, dict) else {}
        )
        example = f" Example: {env_name}={extra['example']}" if "example" in extra else ""
        if problem["type"] == "missing":
            lines.append(f"{env_name} is not set.{example}")
        else:
            given = hide_url_password(os.environ.get(env_name, ""))
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{env_name}={given!r} is invalid: {message}.{example}")
    return "Invalid configuration: " + " ".join(lines)


def hide_url_password(text: str) -> str:
    """Replace the password in any `scheme://user:password@host` inside text with ***."""
    return re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)


def load_dotenv_file() -> None:
    """Load `.env` from the working directory into os.environ, never overriding set values."""
    from dotenv import load_dotenv

    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)


class BridgeSettings(_EnvSettings):
    """The REST bridge's address, bearer token, body limit and sensor interval."""

    # Checked for length by the bridge at startup, so that no message shows the value.
    bridge_api_token: SecretStr | None = Field(
        default=None, json_schema_extra=_example("a random string of 16 characters or more")
    )
    bridge_host: str = Field(default="127.0.0.1", json_schema_extra=_example("127.0.0.1"))
    bridge_port: int = Field(default=8080, ge=1, le=65535, json_schema_extra=_example("8080"))
    bridge_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=67_108_864, json_schema_extra=_example("1048576")
    )
    bridge_sensor_interval_seconds: int = Field(
        default=10, ge=1, le=3600, json_schema_extra=_example("10")
    )

    @field_validator("bridge_api_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value
