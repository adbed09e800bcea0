"""Dagster resource that hands assets an engine for the application database."""

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr
from sqlalchemy import Engine

from center_pipeline.config import DatabaseSettings, load_settings
from center_pipeline.db.engine import create_database_engine


class DatabaseResource(ConfigurableResource):
    """The SQL database behind `centers` and `batch_runs`.

    `url` comes from DATABASE_URL through EnvVar when that variable is set, because the URL
    may carry a password; otherwise the default SQLite file `stage.db` is used.
    """

    url: str | None = None

    _engine: Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        url = self.url or load_settings(DatabaseSettings).database_url
        self._engine = create_database_engine(url)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("DatabaseResource.engine is only available inside a run")
        return self._engine
