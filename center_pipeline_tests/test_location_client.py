"""Tests for LocationApiClient against a scripted HTTP server on 127.0.0.1."""

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from center_pipeline.locations.client import LocationApiClient
from center_pipeline.locations.models import (
    Center,
    CenterNotFound,
    CenterStatus,
    LocationApiError,
    SkipRecord,
)

CASES = json.loads((Path(__file__).parent / "data" / "location_cases.json").read_text())
API_KEY = "sk-test-5f3a9c1e-do-not-log"
DEFAULT_RADIUS = 25.0


@dataclass
class Reply:
    """One scripted response. A body that is not bytes or str is sent as JSON."""

    status: int = 200
    body: object = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


class ScriptedApi:
    """Scripted replies per raw request path, and a log of the requests received.

    Each path has a queue of replies. The last reply repeats once the others are used.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def route(self, path: str, *replies: Reply) -> None:
        self.routes[path] = list(replies)

    def next_reply(self, path: str, headers: dict[str, str]) -> Reply:
        with self.lock:
            self.requests.append((path, headers))
            queue = self.routes.get(path)
            if not queue:
                return Reply(404, {"error": f"no route for {path}"})
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for request_path, _ in self.requests if request_path == path)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        api: ScriptedApi = self.server.api  # type: ignore[attr-defined]
        reply = api.next_reply(self.path, dict(self.headers))
        if reply.delay_seconds:
            time.sleep(reply.delay_seconds)
        body = reply.body
        if isinstance(body, str):
            body = body.replace("{authorization}", self.headers.get("Authorization", ""))
            body = body.encode()
        elif not isinstance(body, bytes):
            body = json.dumps(body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # The client gave up first, as in the timeout test.

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections under the concurrency test, and the
    # client then waits about 1 s for the kernel to resend the SYN.
    request_queue_size = 128


@pytest.fixture
def api():
    server = _Server(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    server.api = ScriptedApi(f"http://{host}:{port}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.api
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _client(api: ScriptedApi, **overrides) -> LocationApiClient:
    settings = {
        "api_key": API_KEY,
        "timeout_seconds": 2.0,
        "max_attempts": 3,
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 0.05,
    }
    settings.update(overrides)
    api_key = settings.pop("api_key")
    return LocationApiClient(f"{api.base_url}/slugs", f"{api.base_url}/v1", api_key, **settings)


def _record(slug: str, **fields) -> dict:
    record = {"id": "C-1", "slug": slug, "name": "Test Center", "zip": "78701"}
    record.update(fields)
    return record


def _expected_center(expected: dict) -> Center:
    fields = dict(expected)
    if fields["radius_miles"] == "DEFAULT":
        fields["radius_miles"] = DEFAULT_RADIUS
    fields["status"] = CenterStatus(fields["status"])
    return Center(**fields)


# Slug list


def test_slugs_paginated_fixture(api):
    case = next(case for case in CASES["slug_lists"] if "pages" in case)
    first, second = case["pages"]
    api.route("/slugs", Reply(body=first))
    api.route("/slugs?page=2", Reply(body=second))

    with _client(api) as client:
        slugs = client.fetch_slugs()

    assert slugs == case["expected_slugs"]
    assert api.count("/slugs") == 1
    assert api.count("/slugs?page=2") == 1


@pytest.mark.parametrize(
    "case",
    [case for case in CASES["slug_lists"] if "body" in case],
    ids=lambda case: case["name"],
)
def test_slugs_fixture_bodies(api, case):
    api.route("/slugs", Reply(body=case["body"]))
    with _client(api) as client:
        assert client.fetch_slugs() == case["expected_slugs"]


def test_slugs_deduped_across_pages(api):
    api.route("/slugs", Reply(body={"items": ["a", "b"], "links": {"next": "/slugs?page=2"}}))
    api.route("/slugs?page=2", Reply(body={"items": ["b", "c"], "links": {"next": None}}))
    with _client(api) as client:
        assert client.fetch_slugs() == ["a", "b", "c"]


def test_slugs_self_link_ends(api):
    api.route("/slugs", Reply(body={"slugs": ["a"], "next": "/slugs"}))
    with _client(api) as client:
        assert client.fetch_slugs() == ["a"]
    assert api.count("/slugs") == 1


def test_slugs_pagination_loop(api):
    api.route("/slugs", Reply(body={"slugs": ["a"], "next": "?page=2"}))
    api.route("/slugs?page=2", Reply(body={"slugs": ["b"], "next": "/slugs"}))
    with _client(api) as client, pytest.raises(LocationApiError, match="loops back"):
        client.fetch_slugs()


def test_slugs_empty(api):
    api.route("/slugs", Reply(body={"slugs": []}))
    with _client(api) as client, pytest.raises(LocationApiError, match="no slugs"):
        client.fetch_slugs()


def test_slugs_unrecognized_body(api):
    api.route("/slugs", Reply(body={"error": "maintenance"}))
    with _client(api) as client, pytest.raises(LocationApiError) as excinfo:
        client.fetch_slugs()

    assert "/slugs" in str(excinfo.value)
    assert "'error'" in str(excinfo.value)


def test_slugs_404_is_api_error(api):
    with _client(api) as client, pytest.raises(LocationApiError) as excinfo:
        client.fetch_slugs()

    assert not isinstance(excinfo.value, CenterNotFound)
    assert "404" in str(excinfo.value)
    assert "LOCATION_SLUG_API_URL" in str(excinfo.value)


# Center detail


@pytest.mark.parametrize(
    "case",
    [case for case in CASES["details"] if "expected" in case],
    ids=lambda case: case["name"],
)
def test_center_fixture_details(api, case):
    expected = _expected_center(case["expected"])
    api.route(f"/v1/slug/{expected.slug}", Reply(body=case["body"]))

    with _client(api) as client:
        center = client.fetch_center(expected.slug, DEFAULT_RADIUS)

    assert center == expected


def test_center_fixture_skip(api):
    case = next(case for case in CASES["details"] if "expected_skip" in case)
    slug = case["body"]["slug"]
    api.route(f"/v1/slug/{slug}", Reply(body=case["body"]))

    with _client(api) as client, pytest.raises(SkipRecord) as excinfo:
        client.fetch_center(slug, DEFAULT_RADIUS)

    assert str(excinfo.value).startswith(case["expected_skip"])


def test_center_slug_one_path_segment(api):
    slug = "north/south side"
    api.route("/v1/slug/north%2Fsouth%20side", Reply(body=_record(slug)))

    with _client(api) as client:
        center = client.fetch_center(slug, DEFAULT_RADIUS)

    assert center.slug == slug
    assert api.count("/v1/slug/north%2Fsouth%20side") == 1


def test_center_dot_slug_stays_in_path(api):
    api.route("/v1/slug/%2E%2E", Reply(body=_record("..")))
    with _client(api) as client:
        assert client.fetch_center("..", DEFAULT_RADIUS).slug == ".."


def test_center_base_url_trailing_slash(api):
    api.route("/v1/slug/a", Reply(body=_record("a")))
    client = LocationApiClient(f"{api.base_url}/slugs", f"{api.base_url}/v1/")
    with client:
        assert client.fetch_center("a", DEFAULT_RADIUS).slug == "a"


def test_bearer_header_sent(api):
    api.route("/slugs", Reply(body=["a"]))
    api.route("/v1/slug/a", Reply(body=_record("a")))

    with _client(api) as client:
        client.fetch_slugs()
        client.fetch_center("a", DEFAULT_RADIUS)

    assert len(api.requests) == 2
    for _, headers in api.requests:
        assert headers.get("Authorization") == f"Bearer {API_KEY}"


def test_no_header_without_key(api):
    api.route("/slugs", Reply(body=["a"]))
    with _client(api, api_key=None) as client:
        client.fetch_slugs()

    _, headers = api.requests[0]
    assert "Authorization" not in headers


def test_center_404_not_found(api):
    with _client(api) as client, pytest.raises(CenterNotFound) as excinfo:
        client.fetch_center("missing", DEFAULT_RADIUS)

    assert "404" in str(excinfo.value)
    assert api.count("/v1/slug/missing") == 1


def test_center_empty_list_not_found(api):
    api.route("/v1/slug/unknown", Reply(body=[]))
    with _client(api) as client, pytest.raises(CenterNotFound) as excinfo:
        client.fetch_center("unknown", DEFAULT_RADIUS)

    assert "'unknown'" in str(excinfo.value)


def test_center_several_records(api):
    api.route("/v1/slug/a", Reply(body=[_record("a"), _record("a")]))
    with _client(api) as client, pytest.raises(LocationApiError, match="list of 2"):
        client.fetch_center("a", DEFAULT_RADIUS)


def test_concurrent_fetches(api):
    slugs = [f"center-{number}" for number in range(40)]
    for slug in slugs:
        api.route(f"/v1/slug/{slug}", Reply(body=_record(slug), delay_seconds=0.05))

    with _client(api) as client, ThreadPoolExecutor(max_workers=16) as pool:
        centers = list(pool.map(lambda slug: client.fetch_center(slug, DEFAULT_RADIUS), slugs))

    assert [center.slug for center in centers] == slugs


# Retries


def test_500_twice_then_success(api):
    api.route("/v1/slug/a", Reply(500), Reply(502), Reply(body=_record("a")))
    with _client(api) as client:
        assert client.fetch_center("a", DEFAULT_RADIUS).slug == "a"
    assert api.count("/v1/slug/a") == 3


def test_500_exhausts_attempts(api):
    api.route("/v1/slug/a", Reply(500))
    with _client(api) as client, pytest.raises(LocationApiError) as excinfo:
        client.fetch_center("a", DEFAULT_RADIUS)

    message = str(excinfo.value)
    assert api.count("/v1/slug/a") == 3
    assert "after 3 attempts" in message
    assert "HTTP 500" in message
    assert "LOCATION_DATA_API_URL" in message


def test_retry_logged_without_key(api, caplog):
    api.route("/v1/slug/a", Reply(503), Reply(body=_record("a")))
    with caplog.at_level(logging.WARNING), _client(api) as client:
        client.fetch_center("a", DEFAULT_RADIUS)

    retries = [record for record in caplog.records if "retrying" in record.getMessage()]
    assert len(retries) == 1
    assert retries[0].levelno == logging.WARNING
    assert "/v1/slug/a" in retries[0].getMessage()
    assert "HTTP 503" in retries[0].getMessage()
    assert "attempt 1 of 3" in retries[0].getMessage()
    assert API_KEY not in caplog.text


def test_429_retry_after_honoured(api):
    api.route("/v1/slug/a", Reply(429, headers={"Retry-After": "1"}), Reply(body=_record("a")))

    started = time.monotonic()
    with _client(api) as client:
        center = client.fetch_center("a", DEFAULT_RADIUS)
    elapsed = time.monotonic() - started

    assert center.slug == "a"
    assert api.count("/v1/slug/a") == 2
    assert elapsed >= 0.95


def test_retry_after_too_long_fails_fast(api):
    api.route("/v1/slug/a", Reply(429, headers={"Retry-After": "3600"}))

    started = time.monotonic()
    with _client(api, max_retry_after_seconds=60) as client:
        with pytest.raises(LocationApiError) as excinfo:
            client.fetch_center("a", DEFAULT_RADIUS)
    elapsed = time.monotonic() - started

    assert api.count("/v1/slug/a") == 1
    assert elapsed < 1.0
    assert "Retry-After 3600 s" in str(excinfo.value)
    assert "maximum wait of 60 s" in str(excinfo.value)


def test_retry_after_http_date(api):
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    api.route("/v1/slug/a", Reply(429, headers={"Retry-After": format_datetime(later, True)}))

    with _client(api) as client, pytest.raises(LocationApiError, match="Retry-After 7[12]"):
        client.fetch_center("a", DEFAULT_RADIUS)

    assert api.count("/v1/slug/a") == 1


def test_400_not_retried(api):
    api.route("/v1/slug/a", Reply(400, {"error": "bad slug"}))
    with _client(api) as client, pytest.raises(LocationApiError) as excinfo:
        client.fetch_center("a", DEFAULT_RADIUS)

    assert api.count("/v1/slug/a") == 1
    assert "HTTP 400" in str(excinfo.value)
    assert "bad slug" in str(excinfo.value)


def test_401_names_key_setting(api):
    api.route("/slugs", Reply(401, {"error": "invalid token"}))
    with _client(api) as client, pytest.raises(LocationApiError) as excinfo:
        client.fetch_slugs()

    assert api.count("/slugs") == 1
    assert "LOCATION_API_KEY" in str(excinfo.value)


def test_malformed_json_retried(api):
    api.route("/v1/slug/a", Reply(body='{"slug": "a", "zi'), Reply(body=_record("a")))
    with _client(api) as client:
        assert client.fetch_center("a", DEFAULT_RADIUS).slug == "a"
    assert api.count("/v1/slug/a") == 2


def test_malformed_json_fails(api):
    api.route("/v1/slug/a", Reply(body="<html>Bad gateway</html>"))
    with _client(api) as client, pytest.raises(LocationApiError, match="malformed JSON"):
        client.fetch_center("a", DEFAULT_RADIUS)
    assert api.count("/v1/slug/a") == 3


def test_timeout(api):
    api.route("/v1/slug/slow", Reply(body=_record("slow"), delay_seconds=1.0))

    started = time.monotonic()
    with _client(api, timeout_seconds=0.2, max_attempts=2) as client:
        with pytest.raises(LocationApiError) as excinfo:
            client.fetch_center("slow", DEFAULT_RADIUS)
    elapsed = time.monotonic() - started

    assert "timed out" in str(excinfo.value)
    assert api.count("/v1/slug/slow") == 2
    assert elapsed < 1.5


def test_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    client = LocationApiClient(
        f"{base_url}/slugs", base_url, API_KEY, max_attempts=2, backoff_seconds=0.01
    )

    with client, pytest.raises(LocationApiError) as excinfo:
        client.fetch_slugs()

    assert "ConnectError" in str(excinfo.value)
    assert "LOCATION_SLUG_API_URL" in str(excinfo.value)


# Secrets


@pytest.mark.parametrize(
    "reply",
    [
        Reply(400, "rejected header {authorization}"),
        Reply(401, "token {authorization} expired"),
        Reply(500, "upstream saw {authorization}"),
        Reply(200, "not json {authorization}"),
        Reply(200, {"error": "no slugs"}),
    ],
    ids=["400", "401", "500", "bad-json", "no-slug-list"],
)
def test_key_not_in_errors(api, reply, caplog):
    api.route("/slugs", reply)
    with caplog.at_level(logging.DEBUG), _client(api) as client:
        with pytest.raises(LocationApiError) as excinfo:
            client.fetch_slugs()

    assert API_KEY not in str(excinfo.value)
    assert API_KEY not in repr(excinfo.value)
    assert API_KEY not in caplog.text


def test_echoed_key_redacted(api):
    api.route("/slugs", Reply(400, "rejected header {authorization}"))
    with _client(api) as client, pytest.raises(LocationApiError) as excinfo:
        client.fetch_slugs()

    assert "Bearer ***" in str(excinfo.value)


def test_key_not_in_repr(api):
    with _client(api) as client:
        text = repr(client)

    assert API_KEY not in text
    assert "api_key=set" in text


@pytest.mark.parametrize(
    "settings",
    [{"max_attempts": 0}, {"timeout_seconds": 0}, {"backoff_seconds": -1}],
)
def test_invalid_settings(settings):
    with pytest.raises(ValueError):
        LocationApiClient("http://127.0.0.1:9/slugs", "http://127.0.0.1:9", **settings)
