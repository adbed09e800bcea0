"""The REST bridge against a real Dagster instance, real SQLite, and the sample servers.

The sensor is evaluated in this process with `build_sensor_context`, and the runs that it
requests are executed in this process; test_bridge_end_to_end.py covers the daemon path.
"""

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from dagster import DagsterInstance, RunRequest, SensorResult, build_sensor_context
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster._daemon.types import DaemonHeartbeat
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from center_pipeline.bridge.app import create_app
from center_pipeline.bridge.planning import REQUEST_TAG, contiguous_ranges
from center_pipeline.bridge.security import check_bind_host
from center_pipeline.bridge.sensor import build_bridge_sensor
from center_pipeline.bridge.store import RequestKind, create_request, get_request
from center_pipeline.cli import main
from center_pipeline.config import BridgeSettings, ConfigError
from center_pipeline.db.batch_runs import get_batch_run
from center_pipeline.db.engine import create_database_engine
from center_pipeline.db.resource import DatabaseResource
from center_pipeline.db.tables import centers
from center_pipeline.definitions import build_definitions
from center_pipeline.partitions import center_partitions
from center_pipeline.runner import RUN_CONFIG, execute_job, open_instance
from center_pipeline.sample_servers.server import SampleServers

TOKEN = "test-token-0123456789abcdef"
LOOPBACK_URL = "http://127.0.0.1"
# Variables of the developer's shell that would point the tests at other servers.
ENV_PREFIXES = ("LOCATION_", "LLM_", "OPENAI_", "XAI_", "CRON_", "EVENT", "BRIDGE_")


@contextmanager
def serve_bridge(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive(), "the bridge server exited during startup"
            assert time.monotonic() < deadline, "the bridge server did not start within 15 s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def bridge_env(tmp_path_factory) -> Iterator[dict]:
    """One synced pipeline for the whole module: sample servers, SQLite, a Dagster instance."""
    root = tmp_path_factory.mktemp("bridge")
    with pytest.MonkeyPatch.context() as monkeypatch, SampleServers() as servers:
        for name in list(os.environ):
            if name.startswith(ENV_PREFIXES):
                monkeypatch.delenv(name)
        values = {
            "DAGSTER_HOME": str(root / "dagster_home"),
            "DATABASE_URL": f"sqlite:///{root / 'stage.db'}",
            "EVENTS_OUTPUT_DIR": str(root / "events"),
            **servers.env(),
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(root)

        instance = open_instance()
        sync = execute_job("sync_centers", instance)
        assert sync.success
        engine = create_database_engine(values["DATABASE_URL"])
        yield {**values, "instance": instance, "engine": engine}
        engine.dispose()
        instance.dispose()


@pytest.fixture(scope="module")
def client(bridge_env) -> Iterator[TestClient]:
    with TestClient(create_app(BridgeSettings()), base_url=LOOPBACK_URL) as test_client:
        yield test_client


@pytest.fixture
def token_client(bridge_env) -> Iterator[TestClient]:
    settings = BridgeSettings(bridge_api_token=SecretStr(TOKEN))
    with TestClient(create_app(settings), base_url=LOOPBACK_URL) as test_client:
        yield test_client


def partition_keys(bridge_env) -> list[str]:
    return list(bridge_env["instance"].get_dynamic_partitions(center_partitions.name))


def inactive_slugs(bridge_env) -> list[str]:
    with bridge_env["engine"].connect() as connection:
        query = select(centers.c.slug).where(centers.c.is_active.is_(False))
        return sorted(connection.execute(query).scalars())


def evaluate_sensor(bridge_env) -> list[RunRequest]:
    with build_sensor_context(
        instance=bridge_env["instance"],
        resources={"database": DatabaseResource(url=bridge_env["DATABASE_URL"])},
    ) as context:
        result = build_bridge_sensor()(context)
    return list(result.run_requests or []) if isinstance(result, SensorResult) else []


def execute_run_request(bridge_env, run_request: RunRequest) -> str:
    """Execute a run request of the sensor in this process, as the daemon does in a subprocess."""
    job = build_definitions().resolve_job_def(run_request.job_name)
    result = job.execute_in_process(
        run_config=RUN_CONFIG,
        instance=bridge_env["instance"],
        tags=dict(run_request.tags),
        raise_on_error=False,
    )
    assert result.success
    return result.run_id


def test_openapi_describes_every_endpoint(client):
    schema = client.get("/openapi.json").json()

    assert set(schema["paths"]) == {
        "/cron/sync-centers",
        "/cron/run-batch",
        "/cron/sync-and-run",
        "/cron/status",
        "/events/status/{run_id}",
    }
    for path in ("/cron/sync-centers", "/cron/run-batch", "/cron/sync-and-run"):
        assert "202" in schema["paths"][path]["post"]["responses"]
        assert "401" in schema["paths"][path]["post"]["responses"]
    models = set(schema["components"]["schemas"])
    for model in (
        "RunBatchBody",
        "LaunchAccepted",
        "CronStatus",
        "RequestDocument",
        "BatchRunDocument",
        "SyncRunDocument",
        "ErrorMessage",
    ):
        assert model in models
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_docs_page_uses_bundled_assets(client):
    docs = client.get("/docs")

    assert docs.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert "/static-offline-docs/swagger-ui-bundle.js" in assets
    for asset in assets:
        assert asset.startswith("/"), f"/docs loads {asset} from another host"
        assert client.get(asset).status_code == 200


def test_post_answers_202_with_status_url(client):
    response = client.post("/cron/sync-centers")

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["request_kind"] == "sync-centers"
    assert accepted["status"] == "pending"
    assert accepted["run_ids"] == []
    assert accepted["replayed"] is False
    assert accepted["status_url"].endswith(f"/events/status/{accepted['request_id']}")
    assert response.headers["location"] == accepted["status_url"]

    document = client.get(accepted["status_url"]).json()
    assert document["kind"] == "request"
    assert document["request_id"] == accepted["request_id"]
    assert document["status"] == "pending"


def test_run_batch_names_unknown_and_inactive_slugs(client, bridge_env):
    inactive = inactive_slugs(bridge_env)[0]
    active = partition_keys(bridge_env)[0]

    response = client.post(
        "/cron/run-batch", json={"slugs": [active, "no-such-center", inactive]}
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert set(detail["slugs"]) == {"no-such-center", inactive}
    assert "unknown slug" in detail["slugs"]["no-such-center"]
    assert "not active" in detail["slugs"][inactive]
    assert "no-such-center" in detail["message"]
    assert inactive in detail["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/cron/run-batch", {"slug": ["a"]}),
        ("/cron/run-batch", {"slugs": []}),
        ("/cron/run-batch", {"slugs": ["x"], "run_date": "not-a-date"}),
        ("/cron/sync-centers", {"force": True}),
        ("/cron/sync-and-run", {"slugs": ["a"]}),
    ],
)
def test_invalid_body_is_422(client, path, body):
    response = client.post(path, json=body)

    assert response.status_code == 422
    assert response.json()["detail"]


def test_body_over_limit_is_413(bridge_env):
    app = create_app(BridgeSettings(bridge_max_body_bytes=1024))
    body = json.dumps({"slugs": ["x" * 100] * 20}).encode()
    with TestClient(app, base_url=LOOPBACK_URL) as limited:
        declared = limited.post(
            "/cron/run-batch", content=body, headers={"content-type": "application/json"}
        )
        chunked = limited.post(
            "/cron/run-batch",
            content=iter([body[:600], body[600:]]),
            headers={"content-type": "application/json"},
        )

    assert declared.status_code == 413
    assert chunked.status_code == 413
    assert "1024 bytes" in chunked.json()["detail"]


def test_token_required_without_revealing_ids(token_client):
    known = token_client.post(
        "/cron/sync-centers", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()["request_id"]

    answers = [
        token_client.get(f"/events/status/{known}"),
        token_client.get("/events/status/unknown-id"),
        token_client.get(f"/events/status/{known}", headers={"Authorization": "Bearer wrong"}),
        token_client.get("/events/status/unknown-id", headers={"Authorization": "Bearer wrong"}),
        token_client.post("/cron/sync-and-run"),
        token_client.get("/cron/status", headers={"Authorization": f"Basic {TOKEN}"}),
    ]

    for answer in answers:
        assert answer.status_code == 401
        assert answer.json() == {"detail": "Missing or invalid bearer token."}
        assert answer.headers["www-authenticate"] == "Bearer"
    authorized = token_client.get(
        f"/events/status/{known}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert authorized.status_code == 200
    assert token_client.get("/docs").status_code == 200


def test_without_token_only_loopback_answers(bridge_env):
    with TestClient(create_app(BridgeSettings()), base_url="http://10.1.2.3") as remote:
        response = remote.get("/cron/status")

    assert response.status_code == 403
    assert "BRIDGE_API_TOKEN" in response.json()["detail"]
    with pytest.raises(ConfigError, match="BRIDGE_API_TOKEN is not set"):
        check_bind_host("0.0.0.0", token=None)
    check_bind_host("0.0.0.0", token=TOKEN)
    check_bind_host("127.0.0.1", token=None)


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Host": "evil.example:8080"}],
    ids=["foreign origin", "foreign host"],
)
def test_without_token_foreign_page_rejected(client, headers):
    response = client.post("/cron/sync-centers", headers=headers)

    assert response.status_code == 403
    assert "BRIDGE_API_TOKEN" in response.json()["detail"]


def test_without_token_local_origin_accepted(client):
    response = client.get("/cron/status", headers={"Origin": "http://127.0.0.1:8080"})

    assert response.status_code == 200


def test_short_token_rejected_without_showing_it():
    with pytest.raises(ConfigError) as raised:
        create_app(BridgeSettings(bridge_api_token=SecretStr("short-secret")))

    assert "at least 16" in str(raised.value)
    assert "short-secret" not in str(raised.value)


def test_bridge_command_refuses_public_host_without_token(bridge_env, capsys):
    exit_code = main(["bridge", "--host", "0.0.0.0", "--port", "1"])

    assert exit_code == 2
    assert "BRIDGE_API_TOKEN is not set" in capsys.readouterr().err


def test_idempotency_key_returns_earlier_request(client, bridge_env):
    key = f"key-{uuid.uuid4()}"
    slugs = partition_keys(bridge_env)[:2]

    first = client.post("/cron/run-batch", json={"slugs": slugs}, headers={"Idempotency-Key": key})
    again = client.post(
        "/cron/run-batch", json={"slugs": slugs[::-1]}, headers={"Idempotency-Key": key}
    )
    other_body = client.post(
        "/cron/run-batch", json={"slugs": slugs[:1]}, headers={"Idempotency-Key": key}
    )
    other_endpoint = client.post("/cron/sync-centers", headers={"Idempotency-Key": key})

    assert first.status_code == again.status_code == 202
    assert again.json()["request_id"] == first.json()["request_id"]
    assert first.json()["replayed"] is False
    assert again.json()["replayed"] is True
    assert other_body.status_code == 422
    assert first.json()["request_id"] in other_body.json()["detail"]
    assert other_endpoint.status_code == 422


def test_unknown_status_id_is_404(client):
    response = client.get("/events/status/no-such-id")

    assert response.status_code == 404
    assert "no-such-id" in response.json()["detail"]


def test_cron_status_reports_schedule_and_daemon(client, bridge_env):
    pending_id = client.post("/cron/sync-and-run").json()["request_id"]

    status = client.get("/cron/status").json()

    schedule = status["schedule"]
    assert schedule["name"] == "nightly_sync_and_run"
    assert schedule["cron_schedule"] == "0 2 * * *"
    assert schedule["timezone"] == "UTC"
    assert schedule["enabled"] is True
    assert schedule["state"] == "running"
    assert schedule["last_tick"] is None
    next_tick = datetime.fromisoformat(schedule["next_tick"])
    assert next_tick > datetime.now(UTC)
    assert (next_tick.hour, next_tick.minute) == (2, 0)
    assert status["daemon"]["alive"] is False
    assert {sensor["name"]: sensor["state"] for sensor in status["sensors"]} == {
        "bridge_requests": "running",
        "batch_after_sync": "running",
    }
    assert pending_id in {request["request_id"] for request in status["pending_requests"]}
    assert status["pending_count"] >= 1


def test_cron_status_daemon_alive_after_heartbeats(client, bridge_env):
    instance: DagsterInstance = bridge_env["instance"]
    now = time.time()
    for daemon_type in instance.get_required_daemon_types():
        instance.add_daemon_heartbeat(DaemonHeartbeat(now, daemon_type, None, None))

    daemon = client.get("/cron/status").json()["daemon"]

    assert daemon["alive"] is True
    assert {entry["daemon_type"] for entry in daemon["daemons"]} == set(
        instance.get_required_daemon_types()
    )
    instance.wipe_daemon_heartbeats()
    assert client.get("/cron/status").json()["daemon"]["alive"] is False


def test_contiguous_ranges_split_at_gaps():
    keys = ["a", "b", "c", "d", "e", "f"]

    assert contiguous_ranges(keys, {"a", "c", "d", "f"}) == [("a", "a"), ("c", "d"), ("f", "f")]
    assert contiguous_ranges(keys, set(keys)) == [("a", "f")]
    assert contiguous_ranges(keys, set()) == []


def test_run_batch_subset_runs_exactly_those_centers(client, bridge_env):
    keys = partition_keys(bridge_env)
    subset = [keys[3], keys[0], keys[2]]
    request_id = client.post(
        "/cron/run-batch", json={"slugs": subset, "run_date": "2030-01-15"}
    ).json()["request_id"]

    run_requests = [
        run_request
        for run_request in evaluate_sensor(bridge_env)
        if run_request.tags.get(REQUEST_TAG) == request_id
    ]

    assert [run_request.run_key for run_request in run_requests] == [request_id, f"{request_id}:1"]
    assert [
        (
            run_request.tags[ASSET_PARTITION_RANGE_START_TAG],
            run_request.tags[ASSET_PARTITION_RANGE_END_TAG],
        )
        for run_request in run_requests
    ] == [(keys[0], keys[0]), (keys[2], keys[3])]
    run_ids = [execute_run_request(bridge_env, run_request) for run_request in run_requests]
    processed = []
    for run_id in run_ids:
        batch = get_batch_run(bridge_env["engine"], run_id)
        assert batch["status"] == "completed"
        assert str(batch["run_date"]) == "2030-01-15"
        processed.extend(result["slug"] for result in batch["results"])
    assert sorted(processed) == sorted(subset)

    assert all(
        run_request.tags.get(REQUEST_TAG) != request_id
        for run_request in evaluate_sensor(bridge_env)
    )
    stored = get_request(bridge_env["engine"], request_id)
    assert stored.status.value == "launched"
    assert stored.run_ids == run_ids
    document = client.get(f"/events/status/{request_id}").json()
    assert document["status"] == "completed"
    assert document["batch_run_ids"] == run_ids
    assert document["total_centers"] == document["successful_centers"] == 3
    assert {run["kind"] for run in document["runs"]} == {"batch"}


def test_sensor_emits_same_run_key_until_launched(client, bridge_env):
    request_id = client.post("/cron/sync-centers").json()["request_id"]

    first = [r for r in evaluate_sensor(bridge_env) if r.tags.get(REQUEST_TAG) == request_id]
    second = [r for r in evaluate_sensor(bridge_env) if r.tags.get(REQUEST_TAG) == request_id]

    assert [r.run_key for r in first] == [r.run_key for r in second] == [request_id]
    assert first[0].job_name == "sync_centers"
    run_id = execute_run_request(bridge_env, first[0])
    assert [r for r in evaluate_sensor(bridge_env) if r.tags.get(REQUEST_TAG) == request_id] == []
    document = client.get(f"/events/status/{request_id}").json()
    assert document["status"] == "completed"
    assert document["sync_run_id"] == run_id
    assert document["runs"][0]["kind"] == "sync"
    assert document["runs"][0]["inserted"] == 0


def test_status_command_prints_bridge_document(client, bridge_env, capsys):
    request_id = client.post("/cron/sync-and-run").json()["request_id"]
    over_http = client.get(f"/events/status/{request_id}").json()

    capsys.readouterr()
    exit_code = main(["status", request_id, "--json"])
    printed = json.loads(capsys.readouterr().out)

    assert exit_code == 0
    assert printed == over_http


def test_sensor_rejects_center_that_lost_partition(client, bridge_env):
    instance: DagsterInstance = bridge_env["instance"]
    slug = partition_keys(bridge_env)[-1]
    request_id = client.post("/cron/run-batch", json={"slugs": [slug]}).json()["request_id"]
    instance.delete_dynamic_partition(center_partitions.name, slug)
    try:
        run_requests = evaluate_sensor(bridge_env)
    finally:
        instance.add_dynamic_partitions(center_partitions.name, [slug])

    assert all(r.tags.get(REQUEST_TAG) != request_id for r in run_requests)
    document = client.get(f"/events/status/{request_id}").json()
    assert document["status"] == "failed"
    assert slug in document["detail"]
    assert "lost its partition" in document["error"]


def test_concurrent_posts_give_right_request_count(bridge_env):
    key = f"key-{uuid.uuid4()}"
    barrier = threading.Barrier(20)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def post(base_url: str, headers: dict[str, str]) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            barrier.wait(timeout=30)
            response = http.post("/cron/sync-centers", headers=headers)
        with lock:
            answers.append(response)

    with serve_bridge(create_app(BridgeSettings())) as base_url:
        threads = [
            threading.Thread(target=post, args=(base_url, {"Idempotency-Key": key}))
            for _ in range(10)
        ] + [threading.Thread(target=post, args=(base_url, {})) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert len(answers) == 20
    assert [answer.status_code for answer in answers] == [202] * 20, [a.text for a in answers]
    keyed = set()
    unkeyed = set()
    for answer in answers:
        with_key = "idempotency-key" in answer.request.headers
        (keyed if with_key else unkeyed).add(answer.json()["request_id"])
    assert len(keyed) == 1
    assert len(unkeyed) == 10
    run_keys = [run_request.run_key for run_request in evaluate_sensor(bridge_env)]
    for request_id in keyed | unkeyed:
        assert run_keys.count(request_id) == 1


def test_create_request_concurrent_on_each_database(database_url):
    engine = create_database_engine(database_url)
    key = f"key-{uuid.uuid4()}"
    barrier = threading.Barrier(20)
    created: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def create(idempotency_key: str | None) -> None:
        barrier.wait(timeout=30)
        stored, was_created = create_request(
            engine, RequestKind.SYNC_CENTERS, None, None, idempotency_key, datetime.now(UTC)
        )
        with lock:
            created.append((stored.request_id if idempotency_key else "", was_created))

    threads = [threading.Thread(target=create, args=(key,)) for _ in range(10)]
    threads += [threading.Thread(target=create, args=(None,)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    engine.dispose()

    keyed = [entry for entry in created if entry[0]]
    assert len(created) == 20
    assert len({request_id for request_id, _ in keyed}) == 1
    assert sum(was_created for _, was_created in keyed) == 1
    assert all(was_created for request_id, was_created in created if not request_id)


def test_sensor_skips_without_pending_requests(tmp_path):
    engine_url = f"sqlite:///{tmp_path / 'empty.db'}"
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        with build_sensor_context(
            instance=instance, resources={"database": DatabaseResource(url=engine_url)}
        ) as context:
            result = build_bridge_sensor()(context)

    assert "No pending bridge requests" in result.skip_message
