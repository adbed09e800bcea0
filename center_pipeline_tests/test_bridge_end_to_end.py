"""POST /cron/sync-and-run to a completed batch, through a real `dagster-daemon` process.

The bridge runs on uvicorn on 127.0.0.1 in this process; the daemon evaluates the
`bridge_requests` and `batch_after_sync` sensors and launches the runs in subprocesses.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, RunsFilter

from center_pipeline.bridge.app import create_app
from center_pipeline.bridge.planning import REQUEST_TAG
from center_pipeline.config import BridgeSettings
from center_pipeline.sample_servers.server import SampleServers
from center_pipeline_tests.test_bridge_api import ENV_PREFIXES, serve_bridge

# The request completes in about 60 s on a 2-core machine with little else running, and
# the whole test took 134 s with a load average of 9 (pytest --durations).
COMPLETION_TIMEOUT_SECONDS = 150
DAEMON_STOP_TIMEOUT_SECONDS = 20


@pytest.fixture
def daemon_env(tmp_path: Path, monkeypatch) -> Iterator[dict[str, str]]:
    """Environment of the daemon and the bridge: sample servers, SQLite, a fresh instance."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The default run queue, checked every second instead of every 5 s.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_queue:\n  dequeue_interval_seconds: 1\n"
    )
    with SampleServers() as servers:
        values = {
            "DAGSTER_HOME": str(home),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'stage.db'}",
            "EVENTS_OUTPUT_DIR": str(tmp_path / "events"),
            # The daemon's sensor loop still waits 5 s between iterations (Dagster 1.13).
            "BRIDGE_SENSOR_INTERVAL_SECONDS": "1",
            **servers.env(),
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        yield values


@pytest.fixture
def daemon(daemon_env, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` in its own process group, killed with all its children at the end."""
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: center_pipeline.definitions\n"
        f"      working_directory: {tmp_path}\n"
    )
    log_path = tmp_path / "daemon.log"
    executable = Path(sys.executable).parent / "dagster-daemon"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(executable), "run", "-w", str(workspace)],
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _stop_process_group(process)
        if process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            print(log_path.read_text()[-5000:])


def _stop_process_group(process: subprocess.Popen) -> None:
    """Stop the daemon and its code server and run processes, which share its process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=DAEMON_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    try:
        # Children can outlive the daemon; the group id is the daemon's pid.
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=DAEMON_STOP_TIMEOUT_SECONDS)


def _wait_for_empty_group(process_group: int, timeout: float) -> bool:
    """True once no process is left in the group; killed children linger until reaped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(process_group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_sync_and_run_completes_through_daemon(daemon_env, daemon, tmp_path):
    with serve_bridge(create_app(BridgeSettings())) as base_url, httpx.Client(
        base_url=base_url, timeout=30
    ) as http:
        accepted = http.post("/cron/sync-and-run", headers={"Idempotency-Key": "e2e-1"})
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]

        document = _wait_until_finished(http, request_id, daemon, tmp_path / "daemon.log")
        replay = http.post("/cron/sync-and-run", headers={"Idempotency-Key": "e2e-1"}).json()
        cron_status = http.get("/cron/status").json()

    assert document["status"] == "completed", _describe(document, tmp_path / "daemon.log")
    assert document["request_kind"] == "sync-and-run"
    sync, batch = document["runs"]
    assert sync["kind"] == "sync"
    assert sync["run_id"] == document["sync_run_id"]
    assert sync["inserted"] > 0
    assert sync["dagster_status"] == "SUCCESS"
    assert batch["kind"] == "batch"
    assert [batch["run_id"]] == document["batch_run_ids"]
    assert batch["status"] == "completed"
    assert batch["dagster_status"] == "SUCCESS"
    assert batch["total_centers"] == batch["successful_centers"] > 0
    for result in batch["results"]:
        assert Path(result["csv_path"]).is_file()
    assert replay["request_id"] == request_id
    assert replay["run_ids"] == document["run_ids"]

    assert cron_status["daemon"]["alive"] is True
    assert request_id not in {r["request_id"] for r in cron_status["pending_requests"]}
    with DagsterInstance.get() as instance:
        tagged = instance.get_runs(filters=RunsFilter(tags={REQUEST_TAG: request_id}))
    assert [run.run_id for run in tagged] == [document["sync_run_id"]]

    _stop_process_group(daemon)
    assert _wait_for_empty_group(daemon.pid, timeout=10)


def _wait_until_finished(
    http: httpx.Client, request_id: str, daemon: subprocess.Popen, log_path: Path
) -> dict:
    deadline = time.monotonic() + COMPLETION_TIMEOUT_SECONDS
    document: dict = {}
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"the daemon exited: {log_path.read_text()[-3000:]}"
        response = http.get(f"/events/status/{request_id}")
        assert response.status_code == 200, response.text
        document = response.json()
        if document["status"] in ("completed", "failed"):
            return document
        time.sleep(1)
    pytest.fail(
        f"Request {request_id} did not finish within {COMPLETION_TIMEOUT_SECONDS} s; last "
        f"document: {document}; daemon log: {log_path.read_text()[-3000:]}"
    )


def _describe(document: dict, log_path: Path) -> str:
    runs = [
        (run["kind"], run["run_id"], run.get("status"), run.get("dagster_status"), run.get("error"))
        for run in document["runs"]
    ]
    return (
        f"status {document['status']}: {document['detail']}; runs {runs}; "
        f"daemon log: {log_path.read_text()[-3000:]}"
    )
