"""Fault injection: the real jobs against the sample servers' fault switches.

Each test is one row of the matrix in docs/RELIABILITY.md.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from sqlalchemy import select

from center_pipeline.cli import main
from center_pipeline.db.engine import create_database_engine
from center_pipeline.db.tables import batch_runs
from center_pipeline.events.csv_output import read_events_csv
from center_pipeline.sample_servers.faults import FaultPlan
from center_pipeline.sample_servers.server import SampleServers, load_sample_network
from center_pipeline_tests.test_pipeline_runs import RUN_DATE, center_rows, run_cli

AUSTIN = {
    "slug": "austin-downtown",
    "detail": {
        "center_id": "C-1001",
        "slug": "austin-downtown",
        "center_name": "Austin Downtown",
        "city": "Austin",
        "state": "TX",
        "zip": "78701",
    },
}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the fault handling does not depend on the database."""
    return f"sqlite:///{tmp_path / 'stage.db'}"


def serve(monkeypatch, **server_options) -> SampleServers:
    servers = SampleServers(**server_options).start()
    for name, value in servers.env().items():
        monkeypatch.setenv(name, value)
    return servers


def llm_error(status: int, body: dict, headers: dict | None = None) -> dict:
    return {"status": status, "body": body, "headers": headers or {}}


def test_detail_faults_all_centers_stored(pipeline_env, monkeypatch, capsys):
    monkeypatch.setenv("LOCATION_API_TIMEOUT_SECONDS", "0.5")
    detail_faults = {
        "error_rate": 0.2,
        "error_status": 500,
        "malformed_rate": 0.2,
        "stall_first": 1,
        "stall_seconds": 1.5,
    }
    servers = serve(monkeypatch, location_faults=FaultPlan(seed=3, detail=detail_faults))
    try:
        exit_code, report = run_cli(capsys, "sync")
        requests = servers.location_counter.snapshot().by_slug
    finally:
        servers.stop()

    network = load_sample_network()
    sync = report["sync"]
    assert exit_code == 0
    assert sync["inserted"] + sync["failed"] == len(network)
    assert sync["deactivated"] == 0
    # Every slug's first request stalled past the client timeout, so each needed a retry.
    assert all(count >= 2 for count in requests.values())
    rows = center_rows(pipeline_env["DATABASE_URL"])
    assert set(rows) | set(sync["details"]["failed"]) == {entry["slug"] for entry in network}


def test_detail_rate_limit_honours_retry_after(pipeline_env, monkeypatch, capsys):
    faults = FaultPlan(detail={"fail_first": 1, "error_status": 429, "retry_after_seconds": 1})
    servers = serve(monkeypatch, location_faults=faults)
    try:
        exit_code, report = run_cli(capsys, "sync")
        requests = servers.location_counter.snapshot().by_slug
    finally:
        servers.stop()

    assert exit_code == 0
    assert report["sync"]["failed"] == 0
    assert set(requests.values()) == {2}


def test_detail_failures_deactivate_nothing(pipeline_env, monkeypatch, capsys):
    servers = serve(monkeypatch)
    try:
        assert run_cli(capsys, "sync")[0] == 0
        before = center_rows(pipeline_env["DATABASE_URL"])
        servers.location_faults = FaultPlan(
            detail={"error_rate": 1.0, "error_status": 503, "retry_after_seconds": None}
        )
        monkeypatch.setenv("LOCATION_API_CONCURRENCY", "32")
        exit_code, report = run_cli(capsys, "sync")
    finally:
        servers.stop()

    assert exit_code == 0
    assert report["sync"]["failed"] == len(before)
    assert report["sync"]["deactivated"] == 0
    for reason in report["sync"]["details"]["failed"].values():
        assert "503" in reason
    assert center_rows(pipeline_env["DATABASE_URL"]) == before


def _sync_then_batch(monkeypatch, capsys, env=None, **server_options) -> tuple[int, dict, int]:
    """Sync and batch against fresh sample servers; `env` is set after the servers' own.

    Returns the batch's exit code, its JSON report and the LLM requests the server counted.
    """
    servers = serve(monkeypatch, **server_options)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    try:
        assert run_cli(capsys, "sync")[0] == 0
        exit_code, report = run_cli(capsys, "batch", "--run-date", RUN_DATE)
        requests = servers.llm_counter.snapshot().total
    finally:
        servers.stop()
    return exit_code, report, requests


def _batch_one_center(monkeypatch, capsys, script: list[dict]) -> tuple[int, dict, int]:
    # The scripts are chat-completion bodies, so the batch must take the chat path.
    monkeypatch.setenv("LLM_WEB_SEARCH", "false")
    exit_code, report, requests = _sync_then_batch(
        monkeypatch, capsys, network=[AUSTIN], llm_script=script
    )
    [result] = report["batch"]["results"]
    return exit_code, result, requests


OPENAI_ERROR = {"error": {"message": "", "type": "", "param": None, "code": None}}


@pytest.mark.parametrize(
    ("name", "response", "reason", "requests"),
    [
        (
            "retry-after far too long",
            llm_error(
                429,
                {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                },
                {"retry-after": "3600"},
            ),
            "retry",
            1,
        ),
        (
            "insufficient quota",
            llm_error(
                429,
                {
                    "error": {
                        "message": "You exceeded your current quota.",
                        "type": "insufficient_quota",
                        "code": "insufficient_quota",
                    }
                },
            ),
            "quota",
            1,
        ),
        (
            "request too large",
            llm_error(
                413,
                {
                    "error": {
                        "message": "Request too large for model.",
                        "type": "invalid_request_error",
                        "code": None,
                    }
                },
            ),
            "large",
            1,
        ),
        (
            "xai flat invalid key",
            llm_error(
                400,
                {
                    "code": "Client specified an invalid argument",
                    "error": "Incorrect API key provided: xa***ey. You can obtain an API "
                    "key from https://console.x.ai.",
                },
            ),
            "API key",
            1,
        ),
        (
            "xai flat server error retried",
            llm_error(500, {"code": "Internal error", "error": "Service temporarily unavailable."}),
            "500",
            4,
        ),
    ],
)
def test_llm_error_ends_center(pipeline_env, monkeypatch, capsys, name, response, reason, requests):
    started = time.monotonic()
    exit_code, result, made = _batch_one_center(monkeypatch, capsys, [response])

    assert exit_code == 1
    assert result["status"] == "failed"
    assert reason.lower() in result["error"].lower()
    assert made == requests
    assert time.monotonic() - started < 120  # no hour-long sleep on Retry-After


def test_llm_timeout_then_answer(pipeline_env, monkeypatch, capsys):
    monkeypatch.setenv("LLM_TIMEOUT_SECONDS", "0.5")
    faults = FaultPlan(llm={"stall_first": 1, "stall_seconds": 1.5})
    exit_code, report, requests = _sync_then_batch(
        monkeypatch, capsys, network=[AUSTIN], llm_faults=faults
    )

    assert exit_code == 0
    assert report["batch"]["successful_centers"] == 1
    assert requests == 2


def test_invalid_key_stops_calling_llm(pipeline_env, monkeypatch, capsys):
    monkeypatch.setenv("LLM_CONCURRENCY", "2")
    exit_code, report, requests = _sync_then_batch(
        monkeypatch, capsys, env={"LLM_API_KEY": "a-wrong-key"}, llm_api_key="the-right-key"
    )

    batch = report["batch"]
    assert exit_code == 1
    assert batch["status"] == "failed"
    assert batch["failed_centers"] == batch["total_centers"] > 10
    # Three rejections open the circuit; at most one more call per worker was in flight.
    assert 3 <= requests <= 3 + 2
    for result in batch["results"]:
        assert "API key" in result["error"]


def test_hostile_llm_text_neutralized(pipeline_env, monkeypatch, capsys):
    events = [
        {
            "name": '=HYPERLINK("http://evil.example","click")',
            "date": RUN_DATE,
            "url": "javascript:alert(1)",
            "description": "+1 cmd|' /C calc'!A0",
        },
        {
            "name": "Good Event",
            "date": RUN_DATE,
            "url": "https://events.example.org/good",
            "venue": "@venue",
        },
    ]
    answer = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": json.dumps({"events": events})},
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    exit_code, result, _ = _batch_one_center(monkeypatch, capsys, [{"status": 200, "body": answer}])

    assert exit_code == 0
    rows = {row["url"] or row["name"]: row for row in read_events_csv(Path(result["csv_path"]))}
    evil = next(row for row in rows.values() if "HYPERLINK" in row["name"])
    assert evil["name"].startswith("'=")
    assert evil["url"] == ""
    assert evil["description"].startswith("'+")
    good = rows["https://events.example.org/good"]
    assert good["venue"] == "'@venue"


HOSTILE_SLUGS = [
    "a/b",
    "../etc",
    "..",
    "x%2Fy",
    "two words",
    "pipe|slug",
    "café-montréal",
    "s" * 500,
    "comma,slug",
]


def test_hostile_slugs_stay_contained(pipeline_env, monkeypatch, capsys):
    network = [
        {
            "slug": slug,
            "detail": {
                "id": f"H-{index}",
                "slug": slug,
                "name": f"Hostile {index}",
                "city": "Austin",
                "state": "TX",
                "zip": "78701",
            },
        }
        for index, slug in enumerate(HOSTILE_SLUGS)
    ]
    servers = serve(monkeypatch, network=network)
    try:
        exit_code, sync_report = run_cli(capsys, "sync")
        requested = set(servers.location_counter.snapshot().by_slug)
        batch_exit, batch_report = run_cli(capsys, "batch", "--run-date", RUN_DATE)
    finally:
        servers.stop()

    assert exit_code == 0
    # The server decoded every request path back to exactly one listed slug.
    assert requested == set(HOSTILE_SLUGS)
    assert sync_report["sync"]["inserted"] == len(HOSTILE_SLUGS)
    rejected = sync_report["sync"]["details"]["partitions_rejected"]
    assert set(rejected) == {"s" * 500, "comma,slug"}
    with DagsterInstance.get() as instance:
        keys = set(instance.get_dynamic_partitions("centers"))
    assert keys == set(HOSTILE_SLUGS) - set(rejected)

    assert batch_exit == 0
    output_dir = Path(pipeline_env["EVENTS_OUTPUT_DIR"]).resolve()
    paths = [Path(result["csv_path"]) for result in batch_report["batch"]["results"]]
    assert len(set(paths)) == len(keys)
    for path in paths:
        assert path.resolve().is_relative_to(output_dir)
        assert path.exists()


def test_killed_batch_marked_failed_and_resumed(pipeline_env, monkeypatch, capsys):
    monkeypatch.setenv("LLM_CONCURRENCY", "2")
    monkeypatch.setenv("BATCH_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("BATCH_STALE_AFTER_SECONDS", "3")
    servers = serve(monkeypatch, llm_faults=FaultPlan(latency_ms=700))
    engine = create_database_engine(pipeline_env["DATABASE_URL"])
    worker = None
    try:
        assert run_cli(capsys, "sync")[0] == 0
        worker = subprocess.Popen(
            [sys.executable, "-m", "center_pipeline.cli", "batch", "--run-date", RUN_DATE],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        row = _wait_for_progress(engine, at_least=4)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        killed = _batch_row(engine, row["run_id"])
        assert killed["status"] == "running"
        assert killed["processed_centers"] < killed["total_centers"]

        time.sleep(3.5)
        servers.llm_faults = FaultPlan()
        servers.llm_counter.reset()
        exit_code, report = run_cli(capsys, "batch", "--resume", row["run_id"])
        requests = servers.llm_counter.snapshot().total
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        servers.stop()

    dead = _batch_row(engine, row["run_id"])
    assert dead["status"] == "failed"
    assert "heartbeat" in dead["error"]
    with DagsterInstance.get() as instance:
        assert instance.get_run_by_id(row["run_id"]).is_failure

    resumed = report["batch"]
    assert exit_code == 0
    assert resumed["status"] == "completed"
    assert resumed["successful_centers"] == resumed["total_centers"] == killed["total_centers"]
    assert requests == killed["total_centers"] - killed["successful_centers"]
    engine.dispose()


def _batch_row(engine, run_id: str) -> dict:
    with engine.connect() as connection:
        query = select(batch_runs).where(batch_runs.c.run_id == run_id)
        return dict(connection.execute(query).mappings().one())


def _wait_for_progress(engine, at_least: int) -> dict:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            row = connection.execute(select(batch_runs)).mappings().first()
        if row is not None and row["successful_centers"] >= at_least:
            return dict(row)
        time.sleep(0.2)
    raise AssertionError(f"the batch did not reach {at_least} centers within 90 s")


def test_overlong_fields_fail_only_their_center(pipeline_env, monkeypatch, capsys):
    long_id = {"id": "X" * 200, "slug": "long-id", "name": "Long Id", "city": "Austin",
               "state": "TX", "zip": "78701"}
    servers = serve(monkeypatch, network=[AUSTIN, {"slug": "long-id", "detail": long_id}])
    try:
        exit_code, report = run_cli(capsys, "sync")
    finally:
        servers.stop()

    assert exit_code == 0
    assert report["sync"]["inserted"] == 1
    assert "center_id is 200 characters" in report["sync"]["details"]["failed"]["long-id"]
    assert set(center_rows(pipeline_env["DATABASE_URL"])) == {AUSTIN["slug"]}


def test_unpartitionable_slug_in_summary(pipeline_env, monkeypatch, capsys):
    comma_slug = "dallas,uptown"
    comma_center = {"slug": comma_slug, "detail": {**AUSTIN["detail"], "center_id": "C-1002",
                                                   "slug": comma_slug, "center_name": "Dallas"}}
    servers = serve(monkeypatch, network=[AUSTIN, comma_center])
    try:
        capsys.readouterr()
        exit_code = main(["sync"])
        summary = capsys.readouterr().out
    finally:
        servers.stop()

    assert exit_code == 0
    assert f"no partition, so no events for {comma_slug}: the slug contains ','" in summary
    with DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        warnings = [entry.user_message for entry in instance.all_logs(run.run_id)
                    if entry.level == logging.WARNING]
        materialization = instance.get_latest_materialization_event(AssetKey("centers"))
    assert any(comma_slug in message for message in warnings)
    assert materialization.asset_materialization.metadata["partitions_rejected"].value == 1
