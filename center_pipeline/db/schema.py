"""Schema migrations of the application tables, run with Alembic from Python.

The migrations ship inside the package (`center_pipeline/db/migrations`), so they work
from an installed wheel with no alembic.ini. A database is in one of these states:

- empty: none of the application tables. `prepare_schema` creates them at start.
- previous release: the tables of the first release, created by `metadata.create_all`
  before migrations existed, and no revision. Only `upgrade_schema` changes it: it stamps
  the database with revision 0001 and upgrades it from there, keeping the rows.
- current: at the latest revision.
- out of date: at an older revision. Only `upgrade_schema` upgrades it.
- newer: at a revision that this release does not know.

Every change to the schema runs in one transaction under a lock, so processes that start
at the same time wait for each other, and a failed upgrade leaves the database as it was.
"""

import enum
import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    column,
    create_engine,
    event,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from center_pipeline.db.tables import metadata

logger = logging.getLogger(__name__)

# Not Alembic's default `alembic_version`: Dagster's instance storage keeps its own
# `alembic_version` table, and the two may share one PostgreSQL database.
VERSION_TABLE = "center_pipeline_alembic_version"
UPGRADE_COMMAND = "center-pipeline db upgrade"

# The tables of the first release, which revision 0001 creates unchanged.
INITIAL_REVISION = "0001"
PREVIOUS_RELEASE_TABLES = frozenset({"centers", "batch_runs", "batch_run_centers", "sync_runs"})

# Seconds that a PostgreSQL connection attempt may take, so that a host that drops packets
# fails the start instead of hanging. A connect_timeout in the URL's query wins.
CONNECT_TIMEOUT_SECONDS = 10

# Key of the PostgreSQL advisory lock held during schema work: a fixed 64-bit number that
# no other program is expected to use on the same database.
ADVISORY_LOCK_KEY = 7_265_126_011_530_467_361


class SchemaOutOfDate(Exception):
    """Raised when the application tables need `center-pipeline db upgrade` or a newer release."""


class SchemaState(enum.Enum):
    EMPTY = "empty"
    PREVIOUS_RELEASE = "previous release"
    CURRENT = "current"
    OUT_OF_DATE = "out of date"
    NEWER = "newer"


@dataclass(frozen=True)
class SchemaChange:
    """The state and revision before `upgrade_schema`, and the revision after it."""

    state: SchemaState
    before: str | None
    after: str


def postgres_connect_args(url: URL) -> dict:
    """Driver arguments for a PostgreSQL URL: the connect timeout unless the URL sets one."""
    if url.get_backend_name() != "postgresql" or "connect_timeout" in url.query:
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


def head_revision() -> str:
    """Return the latest revision that this release's migrations define."""
    return _script_directory().get_current_head()


def prepare_schema(url: str | URL) -> None:
    """Create the tables in an empty database, and check that any other one is current.

    Raises:
        SchemaOutOfDate: the database is of the previous release, at an older revision, or
            at a revision that this release does not know.
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    url = make_url(url)
    # Most starts find the tables current, and this read takes no lock.
    with _schema_connection(url, lock=False) as connection:
        state, revision = read_schema_state(connection)
    if state is SchemaState.CURRENT:
        return

    with _schema_connection(url, lock=True) as connection:
        state, revision = read_schema_state(connection)
        if state is SchemaState.CURRENT:
            return
        if state is not SchemaState.EMPTY:
            raise SchemaOutOfDate(_out_of_date_message(url, state, revision))
        _upgrade(connection, "head")
    logger.info(
        "Created the application tables in %s at revision %s", _describe(url), head_revision()
    )


def upgrade_schema(url: str | URL, revision: str = "head") -> SchemaChange:
    """Create or upgrade the application tables to `revision`, keeping their rows.

    A database of the previous release is first stamped with revision 0001, whose tables it
    already has.

    Raises:
        SchemaOutOfDate: the database is at a revision that this release does not know, or
            has only some of the previous release's tables.
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    url = make_url(url)
    with _schema_connection(url, lock=True) as connection:
        state, before = read_schema_state(connection)
        if state is SchemaState.NEWER:
            raise SchemaOutOfDate(_out_of_date_message(url, state, before))
        if state is SchemaState.PREVIOUS_RELEASE:
            _check_previous_release_tables(connection, url)
            command.stamp(_alembic_config(connection), INITIAL_REVISION)
        _upgrade(connection, revision)
        after = _current_revision(connection)
    if state is SchemaState.EMPTY:
        logger.info("Created the application tables in %s at revision %s", _describe(url), after)
    elif state is SchemaState.PREVIOUS_RELEASE:
        logger.info(
            "Upgraded %s, a database of the previous release, to revision %s", _describe(url), after
        )
    elif after != before:
        logger.info("Upgraded %s from revision %s to %s", _describe(url), before, after)
    return SchemaChange(state=state, before=before, after=after)


def read_schema_state(connection: Connection) -> tuple[SchemaState, str | None]:
    """Classify the database, and return its revision or None when it has none."""
    revision = _current_revision(connection)
    if revision is None:
        tables = set(inspect(connection).get_table_names())
        if tables & (set(metadata.tables) | PREVIOUS_RELEASE_TABLES):
            return SchemaState.PREVIOUS_RELEASE, None
        return SchemaState.EMPTY, None
    if revision == head_revision():
        return SchemaState.CURRENT, revision
    if revision in _known_revisions():
        return SchemaState.OUT_OF_DATE, revision
    return SchemaState.NEWER, revision


def _current_revision(connection: Connection) -> str | None:
    # A plain query: MigrationContext would log two INFO lines at every engine creation.
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    version_table = table(VERSION_TABLE, column("version_num"))
    revisions = connection.execute(select(version_table.c.version_num)).scalars().all()
    if len(revisions) > 1:
        raise SchemaOutOfDate(
            f"{VERSION_TABLE} contains {len(revisions)} revisions ({', '.join(revisions)}), but "
            "the migrations of this release form one line. Restore a backup."
        )
    return revisions[0] if revisions else None


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(_alembic_config(connection), revision)


def _check_previous_release_tables(connection: Connection, url: URL) -> None:
    missing = PREVIOUS_RELEASE_TABLES - set(inspect(connection).get_table_names())
    if missing:
        raise SchemaOutOfDate(
            f"The database {_describe(url)} has some application tables but not "
            f"{', '.join(sorted(missing))}, so it is neither empty nor a database of the "
            "previous release. Restore it from a backup, or move its tables away and run "
            f"`{UPGRADE_COMMAND}` on the empty database."
        )


def _out_of_date_message(url: URL, state: SchemaState, revision: str | None) -> str:
    tables = f"The application tables in {_describe(url)}"
    fix = (
        f"Run `{UPGRADE_COMMAND}` with the same DATABASE_URL to upgrade them in place; it "
        "keeps every row. Back up the database first."
    )
    if state is SchemaState.PREVIOUS_RELEASE:
        return f"{tables} are from the release before schema migrations (no revision). {fix}"
    if state is SchemaState.OUT_OF_DATE:
        return (
            f"{tables} are at revision {revision}, but this release needs "
            f"{head_revision()}. {fix}"
        )
    return (
        f"{tables} are at revision {revision}, which this release does not know, so a newer "
        "release has upgraded them. Run that release, or restore a backup made before the upgrade."
    )


@contextmanager
def _schema_connection(url: URL, lock: bool) -> Iterator[Connection]:
    """Yield a connection in a transaction, which holds the schema lock when `lock` is set.

    PostgreSQL takes a transaction-level advisory lock. SQLite starts the transaction with
    BEGIN IMMEDIATE, which takes the database's write lock and makes its DDL transactional.
    The transaction commits when the block ends and rolls back when it raises.
    """
    engine = _schema_engine(url, lock)
    try:
        with engine.connect() as connection, connection.begin():
            if lock and engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
            yield connection
    finally:
        engine.dispose()


def _schema_engine(url: URL, lock: bool) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, poolclass=NullPool, connect_args=postgres_connect_args(url))
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})
    if not lock:
        return engine

    # The sqlite3 module would commit on its own before DDL, so turn its transaction
    # handling off and begin the transaction here.
    @event.listens_for(engine, "connect")
    def _disable_driver_transactions(dbapi_connection, _connection_record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # Config is read through ConfigParser, which treats % as interpolation.
    migrations = str(resources.files("center_pipeline.db.migrations"))
    config.set_main_option("script_location", migrations.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _script_directory().walk_revisions())


def _describe(url: URL) -> str:
    return url.render_as_string(hide_password=True)
