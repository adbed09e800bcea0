"""Shared fixtures: a temporary Dagster home and app database, on SQLite and PostgreSQL."""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

TEST_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _postgres_unavailable_reason() -> str | None:
    import psycopg

    try:
        with psycopg.connect(_libpq_url(TEST_POSTGRES_URL), connect_timeout=3):
            return None
    except psycopg.OperationalError as error:
        return (
            f"PostgreSQL at {make_url(TEST_POSTGRES_URL).render_as_string()} unreachable: {error}"
        )


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    reason = _postgres_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    return TEST_POSTGRES_URL


@pytest.fixture
def postgres_database(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    import psycopg

    name = f"center_pipeline_test_{uuid.uuid4().hex[:12]}"
    admin_url = _libpq_url(postgres_server_url)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'stage.db'}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture(scope="session")
def dagster_home_template(tmp_path_factory) -> Path:
    """A Dagster home whose SQLite storages exist already; tests copy it.

    Creating the storages of a new instance takes about 3 s, and a copy a few milliseconds.
    """
    from dagster import DagsterInstance

    home = tmp_path_factory.mktemp("dagster_home_template")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions("centers")
        instance.all_instigator_state()
    return home


@pytest.fixture
def pipeline_env(
    monkeypatch, tmp_path: Path, database_url: str, dagster_home_template: Path
) -> dict[str, str]:
    """Environment for one pipeline: its own DAGSTER_HOME, database and output folder."""
    shutil.copytree(dagster_home_template, tmp_path / "dagster_home")
    for name in list(os.environ):
        if name.startswith(("LOCATION_", "LLM_", "OPENAI_", "XAI_", "CRON_", "EVENT")):
            monkeypatch.delenv(name)
    values = {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DATABASE_URL": database_url,
        "EVENTS_OUTPUT_DIR": str(tmp_path / "events"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return values
