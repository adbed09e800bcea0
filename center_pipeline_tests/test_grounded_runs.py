"""The batch with and without web search, run for real against the sample servers."""

import json
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from center_pipeline.events.models import EVENT_CSV_COLUMNS
from center_pipeline.sample_servers.server import SampleServers
from center_pipeline_tests.test_pipeline_runs import RUN_DATE, read_csv, run_cli

PRICE = {"input_per_million": 1.5, "output_per_million": 6.0, "per_tool_call": 0.01}
NETWORK = [
    {
        "slug": slug,
        "detail": {
            "center_id": f"C-{number}",
            "slug": slug,
            "center_name": f"{city} Center",
            "city": city,
            "state": state,
            "zip": zip_code,
        },
    }
    for number, (slug, city, state, zip_code) in enumerate(
        [
            ("austin-downtown", "Austin", "TX", "78701"),
            ("boston-jp", "Boston", "MA", "02130"),
            ("denver-highland", "Denver", "CO", "80211"),
        ]
    )
]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: test_pipeline_runs runs the same tables on PostgreSQL."""
    return f"sqlite:///{tmp_path / 'stage.db'}"


def run_batch_against(monkeypatch, capsys, servers: SampleServers, **env: str) -> tuple:
    for name, value in {**servers.env(), **env}.items():
        monkeypatch.setenv(name, value)
    return run_cli(capsys, "sync-and-run", "--run-date", RUN_DATE)


def expected_cost(result: dict) -> float:
    return (
        result["prompt_tokens"] * PRICE["input_per_million"] / 1_000_000
        + result["completion_tokens"] * PRICE["output_per_million"] / 1_000_000
        + result["tool_calls"] * PRICE["per_tool_call"]
    )


def materialization_metadata() -> dict:
    with DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(AssetKey("center_events"))
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def test_grounded_batch_cites_and_prices(pipeline_env, monkeypatch, capsys):
    prices = json.dumps({"sample-events-1": PRICE})
    with SampleServers(network=NETWORK) as servers:
        exit_code, report = run_batch_against(monkeypatch, capsys, servers, LLM_PRICES=prices)

    assert exit_code == 0, report
    results = report["batch"]["results"]
    assert len(results) == len(NETWORK)
    for result in results:
        assert result["status"] == "success"
        assert result["tool_calls"] >= 1
        assert result["dropped_unsourced"] == 1
        assert result["events_dropped"] >= 1
        assert result["cost_usd"] == pytest.approx(expected_cost(result))
        columns, rows = read_csv(result["csv_path"])
        assert columns == list(EVENT_CSV_COLUMNS)
        assert columns[-1] == "source_url"
        assert len(rows) == result["events_found"] > 0
        for row in rows:
            assert row["source_url"] == f"{row['url']}?utm_source=sample-llm"

    totals = report["batch"]["totals"]
    assert totals["tool_calls"] == sum(result["tool_calls"] for result in results)
    assert totals["dropped_unsourced"] == len(NETWORK)
    assert totals["cost_usd"] == pytest.approx(sum(expected_cost(r) for r in results), abs=1e-6)
    assert totals["carried_over_centers"] == 0

    metadata = materialization_metadata()
    assert metadata["web_search"] is True
    assert metadata["tool_calls"] == totals["tool_calls"]
    assert metadata["dropped_unsourced"] == totals["dropped_unsourced"]
    assert metadata["cost_usd"] == pytest.approx(totals["cost_usd"], abs=1e-6)


def test_web_search_off_uses_chat(pipeline_env, monkeypatch, capsys):
    # A blank LLM_PRICES leaves the sample model without a price.
    with SampleServers(network=NETWORK) as servers:
        exit_code, report = run_batch_against(
            monkeypatch, capsys, servers, LLM_WEB_SEARCH="false", LLM_PRICES=""
        )

    assert exit_code == 0, report
    for result in report["batch"]["results"]:
        assert result["status"] == "success"
        assert result["tool_calls"] == 0
        assert result["dropped_unsourced"] == 0
        assert result["prompt_tokens"] > 0
        assert result["cost_usd"] is None
        _, rows = read_csv(result["csv_path"])
        assert rows
        assert all(row["source_url"] == "" for row in rows)
    totals = report["batch"]["totals"]
    assert totals["cost_usd"] is None
    assert totals["unpriced_centers"] == len(NETWORK)
    metadata = materialization_metadata()
    assert metadata["web_search"] is False
    assert metadata["cost_usd"] is None


def test_server_without_responses_api_fails(pipeline_env, monkeypatch, capsys):
    not_found = [{"status": 404, "body": {"detail": "Not Found"}}]
    with SampleServers(network=NETWORK, llm_script=not_found) as servers:
        exit_code, report = run_batch_against(monkeypatch, capsys, servers)

    assert exit_code == 1
    assert report["batch_status"] == "failed"
    for result in report["batch"]["results"]:
        assert result["status"] == "failed"
        assert "LLM_WEB_SEARCH=false" in result["error"]
        assert result["csv_path"] is None
