"""No secret reaches a log line, run metadata, exception text or status document."""

import json

import pytest
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from center_pipeline.cli import main
from center_pipeline.sample_servers.server import SampleServers
from center_pipeline_tests.test_pipeline_runs import RUN_DATE

LOCATION_KEY = "loc-secret-7f3a9c"
LLM_KEY = "sk-llm-secret-91c2e0"
DATABASE_PASSWORD = "pg-secret-55d1b8"
BRIDGE_TOKEN = "bridge-secret-0a9d44"
SECRETS = (LOCATION_KEY, LLM_KEY, DATABASE_PASSWORD, BRIDGE_TOKEN)


@pytest.fixture
def database_url(postgres_database: str) -> str:
    """PostgreSQL with a password in the URL; the server's trust auth ignores it."""
    return (
        make_url(postgres_database)
        .set(password=DATABASE_PASSWORD)
        .render_as_string(hide_password=False)
    )


def test_failing_run_leaks_no_secret(pipeline_env, monkeypatch, capfd):
    monkeypatch.setenv("BRIDGE_API_TOKEN", BRIDGE_TOKEN)
    with SampleServers(location_api_key=LOCATION_KEY, llm_api_key="the-right-llm-key") as servers:
        for name, value in servers.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("LOCATION_API_KEY", LOCATION_KEY)
        monkeypatch.setenv("LLM_API_KEY", LLM_KEY)
        sync_exit = main(["sync-and-run", "--run-date", RUN_DATE, "--json"])
        output = capfd.readouterr()
        report = json.loads(output.out)
        status_exit = main(["status", report["batch_run_id"], "--json"])
        status_output = capfd.readouterr()

    assert sync_exit == 1  # every center failed on the rejected LLM key
    assert report["batch"]["failed_centers"] == report["batch"]["total_centers"] > 0
    assert status_exit == 0

    with DagsterInstance.get() as instance:
        run_texts = []
        for run_id in (report["sync_run_id"], report["batch_run_id"]):
            run = instance.get_run_by_id(run_id)
            run_texts.append(json.dumps(run.tags) + json.dumps(run.run_config, default=str))
            for entry in instance.all_logs(run_id):
                run_texts.append(entry.user_message or "")
                run_texts.append(repr(entry.dagster_event))

    captured = "\n".join([output.out, output.err, status_output.out, status_output.err, *run_texts])
    assert "API key" in captured  # the failure itself is reported
    for secret in SECRETS:
        assert secret not in captured, f"secret {secret[:8]}... leaked"
