"""The real-world fixture cases, served over HTTP and run through the real Dagster jobs."""

import json
from datetime import date
from pathlib import Path

import pytest

from center_pipeline.events.csv_output import csv_path_for, read_events_csv
from center_pipeline.events.models import EVENT_CSV_COLUMNS
from center_pipeline.sample_servers.server import SampleServers
from center_pipeline_tests.test_pipeline_runs import center_rows, partition_keys, run_cli

DATA = Path(__file__).parent / "data"
LOCATION_CASES = json.loads((DATA / "location_cases.json").read_text())
LLM_CASES = json.loads((DATA / "llm_cases.json").read_text())
DEFAULT_RADIUS = 25.0


def _detail_slug(case: dict) -> str:
    body = case["body"]
    record = body[0] if isinstance(body, list) else body.get("data", body)
    return record["slug"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the PostgreSQL path of the same jobs runs in test_pipeline_runs."""
    return f"sqlite:///{tmp_path / 'stage.db'}"


def test_location_fixture_details_sync(pipeline_env, monkeypatch, capsys):
    network = [
        {"slug": _detail_slug(case), "detail": case["body"]} for case in LOCATION_CASES["details"]
    ]
    network.append({"slug": "listed-but-missing", "detail": None})
    network.append({"slug": "empty-list-detail", "detail": []})

    with SampleServers(network=network) as servers:
        for name, value in servers.env().items():
            monkeypatch.setenv(name, value)
        exit_code, report = run_cli(capsys, "sync")

    assert exit_code == 0
    details = report["sync"]["details"]
    rows = center_rows(pipeline_env["DATABASE_URL"])
    for case in LOCATION_CASES["details"]:
        slug = _detail_slug(case)
        if "expected_skip" in case:
            assert slug not in rows, case["name"]
            assert case["expected_skip"] in details["skipped"][slug], case["name"]
            continue
        expected = dict(case["expected"])
        if expected["radius_miles"] == "DEFAULT":
            expected["radius_miles"] = DEFAULT_RADIUS
        row = rows[slug]
        for column, value in expected.items():
            assert row[column] == value, f"{case['name']}: {column}"
    assert "listed-but-missing" in details["failed"]
    assert "empty-list-detail" in details["failed"]
    active = {slug for slug, row in rows.items() if row["is_active"]}
    assert partition_keys() == active


@pytest.mark.parametrize("case", LLM_CASES["cases"], ids=lambda case: case["name"])
def test_llm_fixture_case_batch(pipeline_env, monkeypatch, capsys, case):
    austin = LOCATION_CASES["details"][0]["body"]
    run_date = LLM_CASES["run_date"]
    monkeypatch.setenv("EVENT_WINDOW_DAYS", str(LLM_CASES["window_days"]))
    # The fixture cases are chat-completion bodies, so the batch must use chat completions.
    monkeypatch.setenv("LLM_WEB_SEARCH", "false")
    # An earlier good CSV for the same day, which a failed answer must not overwrite.
    earlier = csv_path_for(
        Path(pipeline_env["EVENTS_OUTPUT_DIR"]), austin["slug"], date.fromisoformat(run_date)
    )
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text("name,date\nEarlier Event,2026-12-05\n")
    earlier_bytes = earlier.read_bytes()

    with SampleServers(
        network=[{"slug": austin["slug"], "detail": austin}], llm_script=case["responses"]
    ) as servers:
        for name, value in servers.env().items():
            monkeypatch.setenv(name, value)
        assert run_cli(capsys, "sync")[0] == 0
        servers.llm_counter.reset()
        exit_code, report = run_cli(capsys, "batch", "--run-date", run_date)
        llm_requests = servers.llm_counter.snapshot().total

    expected = case["expected"]
    [result] = report["batch"]["results"]
    assert result["status"] == expected["status"]
    if "requests" in expected:
        assert llm_requests == expected["requests"]
    if expected["status"] == "failed":
        assert exit_code == 1
        assert expected["reason_contains"].lower() in result["error"].lower()
        assert earlier.read_bytes() == earlier_bytes
        return

    assert exit_code == 0
    assert result["events_found"] == expected["events"]
    if "dropped" in expected:
        assert result["events_dropped"] == expected["dropped"]
    rows = read_events_csv(Path(result["csv_path"]))
    assert len(rows) == expected["events"]
    header = Path(result["csv_path"]).read_text().splitlines()[0]
    assert header.split(",") == list(EVENT_CSV_COLUMNS)
    by_name = {row["name"]: row for row in rows}
    for name, value in expected.get("dates", {}).items():
        assert by_name[name]["date"] == value
    for name, value in expected.get("end_dates", {}).items():
        assert by_name[name]["end_date"] == value
    for name, value in expected.get("start_times", {}).items():
        assert by_name[name]["start_time"] == value
