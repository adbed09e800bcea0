"""Schema migrations on SQLite and PostgreSQL: new databases, the previous release, old ones."""

import threading
from datetime import UTC, date, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from dagster import DagsterInstance
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from center_pipeline.cli import main
from center_pipeline.db.engine import create_database_engine, upgrade_database
from center_pipeline.db.schema import (
    UPGRADE_COMMAND,
    VERSION_TABLE,
    SchemaOutOfDate,
    head_revision,
    upgrade_schema,
)
from center_pipeline.db.tables import metadata
from center_pipeline.runner import execute_job
from center_pipeline.sample_servers.server import SampleServers

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)

# The tables as the previous release created them with metadata.create_all, frozen here so
# that later changes to tables.py cannot change what "the previous release" means.
previous_release = MetaData()
Table(
    "centers",
    previous_release,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("center_id", String(128), nullable=False, unique=True),
    Column("slug", String(512), nullable=False, unique=True),
    Column("center_name", String(512), nullable=False),
    Column("city", String(128)),
    Column("state", String(2)),
    Column("zip", String(5)),
    Column("owner_email", String(320)),
    Column("radius_miles", Float, nullable=False),
    Column("status", String(32), nullable=False),
    Column("is_active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_synced_at", DateTime(timezone=True), nullable=False),
)
Table(
    "batch_runs",
    previous_release,
    Column("run_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("run_date", Date, nullable=False),
    Column("total_centers", Integer, nullable=False),
    Column("processed_centers", Integer, nullable=False),
    Column("successful_centers", Integer, nullable=False),
    Column("failed_centers", Integer, nullable=False),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
)
Table(
    "batch_run_centers",
    previous_release,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("batch_runs.run_id"), nullable=False, index=True),
    Column("slug", String(512), nullable=False),
    Column("status", String(16), nullable=False),
    Column("events_found", Integer, nullable=False),
    Column("events_dropped", Integer, nullable=False),
    Column("csv_path", Text),
    Column("error", Text),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("run_id", "slug", name="uq_batch_run_centers_run_slug"),
)
Table(
    "sync_runs",
    previous_release,
    Column("run_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("listed", Integer, nullable=False),
    Column("inserted", Integer, nullable=False),
    Column("updated", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("deactivated", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("details", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
)

PREVIOUS_RELEASE_ROWS = {
    "centers": [
        {
            "id": 1,
            "center_id": "C-1",
            "slug": "austin-north",
            "center_name": "Austin North",
            "city": "Austin",
            "state": "TX",
            "zip": "78701",
            "owner_email": "owner@example.com",
            "radius_miles": 25.0,
            "status": "active",
            "is_active": True,
            "created_at": NOW,
            "updated_at": NOW,
            "last_synced_at": NOW,
        },
        {
            "id": 2,
            "center_id": "C-2",
            "slug": "boston-closed",
            "center_name": "Boston Closed",
            "city": None,
            "state": None,
            "zip": None,
            "owner_email": None,
            "radius_miles": 10.5,
            "status": "inactive",
            "is_active": False,
            "created_at": NOW,
            "updated_at": NOW,
            "last_synced_at": NOW,
        },
    ],
    "batch_runs": [
        {
            "run_id": "run-1",
            "status": "completed",
            "run_date": date(2026, 3, 1),
            "total_centers": 1,
            "processed_centers": 1,
            "successful_centers": 1,
            "failed_centers": 0,
            "error": None,
            "started_at": NOW,
            "completed_at": NOW,
        }
    ],
    "batch_run_centers": [
        {
            "id": 1,
            "run_id": "run-1",
            "slug": "austin-north",
            "status": "success",
            "events_found": 3,
            "events_dropped": 1,
            "csv_path": "data/events/austin-north/2026-03-01.csv",
            "error": None,
            "prompt_tokens": 120,
            "completion_tokens": 80,
            "finished_at": NOW,
        }
    ],
    "sync_runs": [
        {
            "run_id": "sync-1",
            "status": "completed",
            "listed": 2,
            "inserted": 2,
            "updated": 0,
            "unchanged": 0,
            "deactivated": 0,
            "skipped": 0,
            "failed": 0,
            "details": {"failed": {}, "skipped": {}, "deactivated": []},
            "started_at": NOW,
            "completed_at": NOW,
        }
    ],
}


def create_previous_release_database(url: str) -> None:
    """Create the previous release's tables without a revision, and fill them."""
    engine = create_engine(url)
    previous_release.create_all(engine)
    with engine.begin() as connection:
        for name, rows in PREVIOUS_RELEASE_ROWS.items():
            connection.execute(insert(previous_release.tables[name]), rows)
    engine.dispose()


def schema_differences(url: str) -> list:
    """Differences between the database's tables and tables.py, as Alembic reports them."""
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        differences = compare_metadata(context, metadata)
    engine.dispose()
    return [difference for difference in differences if VERSION_TABLE not in str(difference)]


def stored_revision(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as connection:
        revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    engine.dispose()
    return revision


def read_rows(url: str, table_name: str) -> list[dict]:
    engine = create_engine(url)
    table = Table(table_name, MetaData(), autoload_with=engine)
    key = next(iter(table.primary_key.columns))
    with engine.connect() as connection:
        rows = connection.execute(select(table).order_by(key)).mappings().all()
    engine.dispose()
    return [dict(row) for row in rows]


def as_utc(value):
    # SQLite returns naive datetimes for timezone-aware columns.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def test_empty_database_created_at_head(database_url):
    engine = create_database_engine(database_url)
    engine.dispose()

    assert stored_revision(database_url) == head_revision()
    assert schema_differences(database_url) == []


def test_previous_release_upgraded_keeping_rows(database_url, monkeypatch, capsys):
    create_previous_release_database(database_url)
    monkeypatch.setenv("DATABASE_URL", database_url)

    with pytest.raises(SchemaOutOfDate) as refused:
        create_database_engine(database_url)
    assert UPGRADE_COMMAND in str(refused.value)

    capsys.readouterr()
    assert main(["db", "upgrade"]) == 0
    assert "from the release before migrations" in capsys.readouterr().out

    assert stored_revision(database_url) == head_revision()
    assert schema_differences(database_url) == []
    for table_name, expected_rows in PREVIOUS_RELEASE_ROWS.items():
        rows = read_rows(database_url, table_name)
        assert len(rows) == len(expected_rows), table_name
        for row, expected in zip(rows, expected_rows, strict=True):
            stored = {name: as_utc(row[name]) for name in expected}
            assert stored == expected, table_name
    for table_name, expected_rows in PREVIOUS_RELEASE_ROWS.items():
        for row in read_rows(database_url, table_name):
            added = {name: row[name] for name in row if name not in expected_rows[0]}
            assert all(value in (None, 0) for value in added.values()), (table_name, added)
    create_database_engine(database_url).dispose()

    capsys.readouterr()
    assert main(["db", "upgrade"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_older_revision_rejected_at_start(database_url, monkeypatch, capsys):
    upgrade_schema(database_url, "0001")

    with pytest.raises(SchemaOutOfDate) as refused:
        create_database_engine(database_url)

    message = str(refused.value)
    assert "revision 0001" in message
    assert head_revision() in message
    assert UPGRADE_COMMAND in message

    monkeypatch.setenv("DATABASE_URL", database_url)
    capsys.readouterr()
    assert main(["db", "upgrade"]) == 0
    assert f"from revision 0001 to {head_revision()}" in capsys.readouterr().out
    assert schema_differences(database_url) == []


def test_newer_revision_rejected(tmp_path):
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    create_database_engine(url).dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()

    with pytest.raises(SchemaOutOfDate, match="revision 9999, which this release does not know"):
        create_database_engine(url)
    with pytest.raises(SchemaOutOfDate, match="does not know"):
        upgrade_database(url)
    assert stored_revision(url) == "9999"


def test_partial_previous_release_rejected(tmp_path):
    url = f"sqlite:///{tmp_path / 'partial.db'}"
    engine = create_engine(url)
    previous_release.create_all(engine, tables=[previous_release.tables["centers"]])
    engine.dispose()

    with pytest.raises(SchemaOutOfDate) as refused:
        upgrade_database(url)

    assert "batch_run_centers, batch_runs, sync_runs" in str(refused.value)
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == {"centers"}
    engine.dispose()


def test_parallel_starts_create_tables_once(database_url):
    errors: list[BaseException] = []

    def start() -> None:
        try:
            create_database_engine(database_url).dispose()
        except BaseException as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert stored_revision(database_url) == head_revision()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_run_fails_on_out_of_date_schema(pipeline_env, monkeypatch, capsys):
    upgrade_schema(pipeline_env["DATABASE_URL"], "0001")
    with SampleServers() as servers:
        for name, value in servers.env().items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        exit_code = main(["sync"])
        # A run that the UI or the daemon launches meets the schema check in the run itself.
        with DagsterInstance.get() as instance:
            launched = execute_job("sync_centers", instance)

    # The command checks the database before it starts a run.
    assert exit_code == 2
    assert UPGRADE_COMMAND in capsys.readouterr().err
    with DagsterInstance.get() as instance:
        assert [run.run_id for run in instance.get_runs()] == [launched.run_id]
        failures = [
            str(entry.dagster_event.event_specific_data)
            for entry in instance.all_logs(launched.run_id)
            if entry.dagster_event and entry.dagster_event.event_type_value.endswith("FAILURE")
        ]
    assert not launched.success
    assert any(UPGRADE_COMMAND in failure for failure in failures), failures


def test_failed_upgrade_rolled_back(database_url):
    create_previous_release_database(database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        # Revision 0003 adds this column, so the upgrade fails there, after 0001 and 0002.
        connection.execute(text("ALTER TABLE batch_runs ADD COLUMN heartbeat_at TIMESTAMP"))
    tables_before = set(inspect(engine).get_table_names())
    engine.dispose()

    with pytest.raises(DBAPIError, match="heartbeat_at"):
        upgrade_database(database_url)

    engine = create_engine(database_url)
    assert set(inspect(engine).get_table_names()) == tables_before
    engine.dispose()
    assert len(read_rows(database_url, "centers")) == len(PREVIOUS_RELEASE_ROWS["centers"])
