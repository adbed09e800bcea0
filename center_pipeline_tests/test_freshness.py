"""A re-run skips centers whose CSV for the day exists, unless forced. The runs are real."""

from datetime import date, timedelta
from pathlib import Path

import pytest

from center_pipeline.sample_servers.faults import FaultPlan
from center_pipeline.sample_servers.server import SampleServers
from center_pipeline_tests.test_grounded_runs import NETWORK
from center_pipeline_tests.test_pipeline_runs import RUN_DATE, run_cli

NETWORK_SLUGS = [entry["slug"] for entry in NETWORK]
# With this seed, the 400 errors fail some of NETWORK's centers and spare the others.
FAILING_SEED = 1


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the freshness query runs on PostgreSQL in test_pipeline_runs."""
    return f"sqlite:///{tmp_path / 'stage.db'}"


@pytest.fixture
def servers(pipeline_env, monkeypatch):
    with SampleServers(network=NETWORK) as running:
        for name, value in running.env().items():
            monkeypatch.setenv(name, value)
        yield running


def by_slug(report: dict) -> dict[str, dict]:
    return {result["slug"]: result for result in report["batch"]["results"]}


def test_rerun_calls_only_failed_centers(servers, capsys):
    servers.llm_faults = FaultPlan(seed=FAILING_SEED, llm={"error_rate": 0.5, "error_status": 400})
    _, first = run_cli(capsys, "sync-and-run", "--run-date", RUN_DATE)
    first_results = by_slug(first)
    failed = {slug for slug, result in first_results.items() if result["status"] == "failed"}
    succeeded = set(first_results) - failed
    assert failed
    assert succeeded
    contents = {slug: Path(first_results[slug]["csv_path"]).read_bytes() for slug in succeeded}

    servers.llm_faults = FaultPlan()
    servers.llm_counter.reset()
    exit_code, second = run_cli(capsys, "batch", "--run-date", RUN_DATE)

    assert exit_code == 0
    assert servers.llm_counter.snapshot().total == len(failed)
    results = by_slug(second)
    assert all(result["status"] == "success" for result in results.values())
    for slug in succeeded:
        assert results[slug]["carried_over_from"] == first["batch_run_id"]
        assert results[slug]["tool_calls"] == 0
        assert results[slug]["prompt_tokens"] == 0
        assert results[slug]["cost_usd"] == 0.0
        assert Path(results[slug]["csv_path"]).read_bytes() == contents[slug]
    for slug in failed:
        assert results[slug]["carried_over_from"] is None
        assert results[slug]["tool_calls"] >= 1
    totals = second["batch"]["totals"]
    assert totals["carried_over_centers"] == len(succeeded)
    assert totals["tool_calls"] == sum(results[slug]["tool_calls"] for slug in failed)


def test_missing_csv_force_and_new_day(servers, capsys):
    _, first = run_cli(capsys, "sync-and-run", "--run-date", RUN_DATE)
    results = by_slug(first)
    removed = NETWORK_SLUGS[0]
    Path(results[removed]["csv_path"]).unlink()

    servers.llm_counter.reset()
    _, second = run_cli(capsys, "batch", "--run-date", RUN_DATE)

    assert servers.llm_counter.snapshot().total == 1
    carried = {slug for slug, result in by_slug(second).items() if result["carried_over_from"]}
    assert carried == set(NETWORK_SLUGS) - {removed}
    assert Path(by_slug(second)[removed]["csv_path"]).is_file()

    servers.llm_counter.reset()
    exit_code, forced = run_cli(capsys, "batch", "--run-date", RUN_DATE, "--force")

    assert exit_code == 0
    assert servers.llm_counter.snapshot().total == len(NETWORK_SLUGS)
    assert all(result["carried_over_from"] is None for result in by_slug(forced).values())
    assert forced["batch"]["totals"]["carried_over_centers"] == 0

    # A day's CSVs are never carried over into another day.
    next_day_date = (date.fromisoformat(RUN_DATE) + timedelta(days=1)).isoformat()
    servers.llm_counter.reset()
    _, next_day = run_cli(capsys, "batch", "--run-date", next_day_date)

    assert servers.llm_counter.snapshot().total == len(NETWORK_SLUGS)
    assert next_day["batch"]["totals"]["carried_over_centers"] == 0
