"""The jobs run for real: sample servers over HTTP, a temporary Dagster instance, SQLite and PostgreSQL."""

import csv
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance
from sqlalchemy import select

from center_pipeline.cli import main
from center_pipeline.db.engine import create_database_engine
from center_pipeline.db.tables import centers
from center_pipeline.events.models import EVENT_CSV_COLUMNS
from center_pipeline.partitions import center_partitions
from center_pipeline.sample_servers.faults import FaultPlan
from center_pipeline.sample_servers.server import SampleServers, load_sample_network
from center_pipeline_tests.dagster_events import stored_asset_events

RUN_DATE = date.today().isoformat()


def run_cli(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    exit_code = main([*args, "--json"])
    output = capsys.readouterr().out
    return exit_code, json.loads(output) if output.strip() else {}


def center_rows(database_url: str) -> dict[str, dict]:
    engine = create_database_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(centers)).mappings().all()
    engine.dispose()
    return {row["slug"]: dict(row) for row in rows}


def partition_keys() -> set[str]:
    with DagsterInstance.get() as instance:
        return set(instance.get_dynamic_partitions(center_partitions.name))


def read_csv(path: str) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def servers(pipeline_env, monkeypatch):
    with SampleServers() as running:
        for name, value in running.env().items():
            monkeypatch.setenv(name, value)
        yield running


def test_sync_and_run_end_to_end(servers, pipeline_env, capsys):
    exit_code, report = run_cli(capsys, "sync-and-run", "--run-date", RUN_DATE)

    assert exit_code == 0, report
    sync, batch = report["sync"], report["batch"]
    network = load_sample_network()
    assert sync["listed"] == len(network)
    assert sync["inserted"] + sync["skipped"] + sync["failed"] == len(network)
    assert sync["failed"] == 0

    rows = center_rows(pipeline_env["DATABASE_URL"])
    active = {slug for slug, row in rows.items() if row["is_active"]}
    assert len(rows) == sync["inserted"]
    assert partition_keys() == active
    assert 0 < len(active) < len(rows)  # the sample network has some inactive centers

    assert report["batch_status"] == "completed"
    assert batch["total_centers"] == len(active)
    assert batch["successful_centers"] == len(active)
    assert batch["failed_centers"] == 0
    assert {result["slug"] for result in batch["results"]} == active
    for result in batch["results"]:
        columns, events = read_csv(result["csv_path"])
        assert columns == list(EVENT_CSV_COLUMNS)
        assert len(events) == result["events_found"] > 0
        assert (
            Path(result["csv_path"])
            .resolve()
            .is_relative_to(Path(pipeline_env["EVENTS_OUTPUT_DIR"]).resolve())
        )
        for event in events:
            assert RUN_DATE <= event["date"] <= (date.today() + timedelta(days=30)).isoformat()

    with DagsterInstance.get() as instance:
        assert instance.get_run_by_id(report["sync_run_id"]).is_success
        assert instance.get_run_by_id(report["batch_run_id"]).is_success
        stored = stored_asset_events(instance, report["batch_run_id"])
    # With the settings of center_pipeline/dagster_env.py, one planned event names them all.
    assert stored.planned_partition_sets == [active]
    assert sorted(stored.materialized_partitions) == sorted(active)


def test_second_sync_leaves_rows_unchanged(servers, pipeline_env, capsys):
    run_cli(capsys, "sync")
    before = center_rows(pipeline_env["DATABASE_URL"])

    exit_code, report = run_cli(capsys, "sync")

    assert exit_code == 0
    assert report["sync"]["inserted"] == 0
    assert report["sync"]["updated"] == 0
    assert report["sync"]["unchanged"] == len(before)
    after = center_rows(pipeline_env["DATABASE_URL"])
    for slug, row in before.items():
        assert after[slug]["updated_at"] == row["updated_at"]
        assert after[slug]["last_synced_at"] >= row["last_synced_at"]


def test_sync_deactivates_unlisted_and_keeps_failed(pipeline_env, monkeypatch, capsys):
    network = load_sample_network()
    with SampleServers(network=network) as first:
        for name, value in first.env().items():
            monkeypatch.setenv(name, value)
        assert run_cli(capsys, "sync")[0] == 0
    before = center_rows(pipeline_env["DATABASE_URL"])
    active = sorted(slug for slug, row in before.items() if row["is_active"])
    removed, failing, missing, empty = active[:4]

    # The data API returns 404 for `missing` and an empty list for `empty`. Both stay listed.
    no_detail = {missing: None, empty: []}
    smaller = [
        {**entry, "detail": no_detail[entry["slug"]]} if entry["slug"] in no_detail else entry
        for entry in network
        if entry["slug"] != removed
    ]
    with SampleServers(
        network=smaller, location_faults=FaultPlan(fail_slugs=frozenset({failing}))
    ) as second:
        for name, value in second.env().items():
            monkeypatch.setenv(name, value)
        exit_code, report = run_cli(capsys, "sync")

    assert exit_code == 0
    assert report["sync"]["deactivated"] == 1
    after = center_rows(pipeline_env["DATABASE_URL"])
    assert after[removed]["is_active"] is False
    assert after[removed]["status"] == "inactive"
    assert removed not in partition_keys()
    for slug in (failing, missing, empty):
        assert slug in report["sync"]["details"]["failed"]
        assert after[slug] == before[slug]
        assert slug in partition_keys()


def test_sync_fails_when_slug_api_down(pipeline_env, monkeypatch, capsys):
    with SampleServers() as first:
        for name, value in first.env().items():
            monkeypatch.setenv(name, value)
        run_cli(capsys, "sync")
    before = center_rows(pipeline_env["DATABASE_URL"])

    with SampleServers(location_faults=FaultPlan(slugs_down=True)) as down:
        for name, value in down.env().items():
            monkeypatch.setenv(name, value)
        exit_code, report = run_cli(capsys, "sync-and-run")

    assert exit_code == 1
    assert "batch_run_id" not in report
    assert center_rows(pipeline_env["DATABASE_URL"]) == before


def test_failed_center_keeps_earlier_csv(pipeline_env, monkeypatch, capsys):
    with SampleServers() as good:
        for name, value in good.env().items():
            monkeypatch.setenv(name, value)
        exit_code, report = run_cli(capsys, "sync-and-run", "--run-date", RUN_DATE)
    assert exit_code == 0
    paths = {result["slug"]: result["csv_path"] for result in report["batch"]["results"]}
    contents = {slug: Path(path).read_bytes() for slug, path in paths.items()}

    truncated = FaultPlan(llm={"truncated_answer_rate": 1.0})
    with SampleServers(llm_faults=truncated) as bad:
        for name, value in bad.env().items():
            monkeypatch.setenv(name, value)
        # Without --force, the CSVs of the first run would be carried over without a call.
        exit_code, report = run_cli(capsys, "batch", "--run-date", RUN_DATE, "--force")

    assert exit_code == 1
    assert report["batch_status"] == "failed"
    assert report["batch"]["failed_centers"] == len(paths)
    for result in report["batch"]["results"]:
        assert "truncated" in result["error"]
    for slug, path in paths.items():
        assert Path(path).read_bytes() == contents[slug]


def test_llm_errors_fail_only_their_centers(pipeline_env, monkeypatch, capsys):
    # 400 is never retried, so each center that draws it fails at once.
    faults = FaultPlan(seed=7, llm={"error_rate": 0.4, "error_status": 400})
    with SampleServers(llm_faults=faults) as servers:
        for name, value in servers.env().items():
            monkeypatch.setenv(name, value)
        exit_code, report = run_cli(capsys, "sync-and-run", "--run-date", RUN_DATE)

    batch = report["batch"]
    assert exit_code == 0
    assert report["batch_status"] == "completed"
    assert batch["failed_centers"] >= 1
    assert batch["successful_centers"] >= 1
    assert batch["processed_centers"] == batch["total_centers"]
    for result in batch["results"]:
        if result["status"] == "failed":
            assert result["csv_path"] is None
            assert "400" in result["error"] or "rejected" in result["error"]


def test_center_missing_from_table_fails_alone(servers, pipeline_env, monkeypatch, capsys):
    assert run_cli(capsys, "sync")[0] == 0
    slugs = sorted(partition_keys())
    engine = create_database_engine(pipeline_env["DATABASE_URL"])
    with engine.begin() as connection:
        connection.execute(centers.delete().where(centers.c.slug == slugs[0]))
    engine.dispose()

    exit_code, report = run_cli(capsys, "batch", "--run-date", RUN_DATE)

    assert exit_code == 0
    assert report["batch_status"] == "completed"
    failed = [result for result in report["batch"]["results"] if result["status"] == "failed"]
    assert [result["slug"] for result in failed] == [slugs[0]]
    assert "run the sync" in failed[0]["error"]
    assert report["batch"]["successful_centers"] == len(slugs) - 1


def test_status_command_prints_batch_document(servers, pipeline_env, capsys):
    _, report = run_cli(capsys, "sync-and-run", "--run-date", RUN_DATE)

    exit_code, document = run_cli(capsys, "status", report["batch_run_id"])

    assert exit_code == 0
    assert document["kind"] == "batch"
    assert document["status"] == "completed"
    assert document["dagster_status"] == "SUCCESS"
    assert len(document["results"]) == document["total_centers"]


def test_missing_location_url_names_variable(pipeline_env, capsys):
    exit_code = main(["sync"])

    assert exit_code == 2
    assert "LOCATION_SLUG_API_URL is not set" in capsys.readouterr().err
    with DagsterInstance.get() as instance:
        assert instance.get_runs() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LLM_CONCURRENCY", "abc", "LLM_CONCURRENCY='abc' is invalid"),
        ("LLM_API_KEY", "", "LLM_API_KEY is not set"),
    ],
)
def test_bad_llm_setting_stops_before_sync(
    servers, pipeline_env, monkeypatch, capsys, variable, value, message
):
    monkeypatch.setenv(variable, value)

    exit_code, report = run_cli(capsys, "sync-and-run")

    assert exit_code == 2
    assert message in report["error"]
    with DagsterInstance.get() as instance:
        assert instance.get_runs() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unreachable_database_starts_no_run(servers, pipeline_env, monkeypatch, capsys):
    # Nothing listens on port 1, so the connection is refused at once.
    monkeypatch.setenv("DATABASE_URL", "postgresql://center:s3cret-pw@127.0.0.1:1/centers")

    exit_code = main(["sync-and-run"])

    error = capsys.readouterr().err
    assert exit_code == 2
    assert "host 127.0.0.1" in error
    assert "s3cret-pw" not in error
    with DagsterInstance.get() as instance:
        assert instance.get_runs() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_status_creates_no_database_file(pipeline_env, monkeypatch, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("DATABASE_URL")

    exit_code = main(["status", "0123abcd"])

    error = capsys.readouterr().err
    assert exit_code == 1
    assert f"no application database at {elsewhere / 'stage.db'}" in error
    assert list(elsewhere.iterdir()) == []
