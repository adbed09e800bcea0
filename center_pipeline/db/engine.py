"""Engine creation for SQLite and PostgreSQL, with errors that name the database."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from center_pipeline.db.schema import (
    SchemaChange,
    postgres_connect_args,
    prepare_schema,
    upgrade_schema,
)


class DatabaseUnavailable(Exception):
    """Raised when the application database cannot be reached at start."""


def describe_url(url: str) -> str:
    """Render a database URL for messages, with the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def missing_sqlite_file(url: str) -> Path | None:
    """Return the file of a SQLite URL that does not exist yet, or None for any other URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database).absolute()
    return None if path.exists() else path


def create_database_engine(url: str) -> Engine:
    """Create an engine, creating the tables first when the database is empty.

    Raises:
        DatabaseUnavailable: the server cannot be reached or refuses the connection.
        SchemaOutOfDate: the tables need `center-pipeline db upgrade`, or come from a newer
            release.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _configure_sqlite_connection)
    else:
        # pre_ping replaces connections that a database restart closed between two runs.
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args=postgres_connect_args(parsed),
        )

    try:
        with _unavailable_on_connection_error(parsed):
            prepare_schema(parsed)
    except BaseException:
        engine.dispose()
        raise
    return engine


def upgrade_database(url: str) -> SchemaChange:
    """Create or upgrade the application tables to the latest revision, keeping their rows.

    Raises:
        DatabaseUnavailable: the server cannot be reached or refuses the connection.
        SchemaOutOfDate: the tables come from a newer release, or only some of the
            previous release's tables exist.
    """
    parsed = make_url(url)
    with _unavailable_on_connection_error(parsed):
        return upgrade_schema(parsed)


@contextmanager
def _unavailable_on_connection_error(url: URL) -> Iterator[None]:
    try:
        yield
    except OperationalError as error:
        # An error with a statement comes from a query or a migration, not from connecting.
        if error.statement is not None:
            raise
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        if url.password:
            reason = reason.replace(str(url.password), "***")
        raise DatabaseUnavailable(
            f"Cannot connect to the database {url.render_as_string(hide_password=True)} "
            f"(host {url.host or 'local file'}, database {url.database}): {reason}. "
            "Check DATABASE_URL and that the server is running."
        ) from None


def _configure_sqlite_connection(dbapi_connection, _connection_record) -> None:
    # WAL lets the status readers work while a batch writes results.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
