"""Dagster resource that hands assets an engine for the application database."""

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from center_pipeline.config import (
    ConfigError,
    DatabaseSettings,
    describe_validation_error,
    hide_url_password,
    load_settings,
)
from center_pipeline.db.engine import create_database_engine


class DatabaseResource(ConfigurableResource):
    """The SQL database behind `centers` and `batch_runs`.

    `url` is set from DATABASE_URL through EnvVar when that variable is set, so the UI hides
    it, because the URL may carry a password. The engine reads and validates DATABASE_URL
    itself (default: the SQLite file `stage.db`), so an invalid value names the variable.
    """

    url: str | None = None

    _engine: Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._engine = engine_from_environment(self.url)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("DatabaseResource.engine is only available inside a run")
        return self._engine


def engine_from_environment(url: str | None = None) -> Engine:
    """Create the engine for `url` or DATABASE_URL; a bad URL gives an error naming the variable.

    Raises:
        ConfigError: the URL is not a usable SQLite or PostgreSQL URL.
    """
    settings = load_settings(DatabaseSettings) if url is None else _validated(url)
    url = settings.database_url
    try:
        return create_database_engine(url)
    except (ArgumentError, NoSuchModuleError, ModuleNotFoundError, ValueError) as error:
        reason = hide_url_password(str(error).splitlines()[0])
        raise ConfigError(
            f"Invalid configuration: DATABASE_URL={hide_url_password(url)!r} is invalid: "
            f"{reason}. Example: DATABASE_URL=postgresql://user@127.0.0.1:5432/centers"
        ) from None


def _validated(url: str) -> DatabaseSettings:
    try:
        return DatabaseSettings(database_url=url)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(DatabaseSettings, error)) from None
