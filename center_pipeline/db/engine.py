"""Engine creation for SQLite and PostgreSQL, with errors that name the database."""

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from center_pipeline.db.tables import metadata


class DatabaseUnavailable(Exception):
    """Raised when the application database cannot be reached at start."""


def describe_url(url: str) -> str:
    """Render a database URL for messages, with the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def create_database_engine(url: str) -> Engine:
    """Create an engine and the tables it needs, failing with the host and database named.

    Raises:
        DatabaseUnavailable: the server cannot be reached or refuses the connection.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _configure_sqlite_connection)
    else:
        # pre_ping replaces connections that a database restart closed between two runs.
        engine = create_engine(url, pool_pre_ping=True, pool_recycle=1800)

    try:
        metadata.create_all(engine)
    except OperationalError as error:
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise DatabaseUnavailable(
            f"Cannot connect to the database {describe_url(url)} "
            f"(host {parsed.host or 'local file'}, database {parsed.database}): {reason}. "
            "Check DATABASE_URL and that the server is running."
        ) from None
    return engine


def _configure_sqlite_connection(dbapi_connection, _connection_record) -> None:
    # WAL lets the status readers work while a batch writes results.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
