"""Tests of the sample location and LLM servers over real HTTP on 127.0.0.1."""

import asyncio
import json
import re
import socket
import threading
import time
from datetime import date, timedelta

import httpx
import openai
import pytest

from center_pipeline.sample_servers.faults import (
    FaultPlan,
    FaultType,
    KindFaults,
    RequestKind,
    decide_fault,
)
from center_pipeline.sample_servers.llm_api import create_llm_app
from center_pipeline.sample_servers.location_api import create_location_app
from center_pipeline.sample_servers.server import (
    SYNTHETIC_PLACES,
    SampleServers,
    load_sample_network,
    make_synthetic_network,
    serve_forever,
)

RUN_DATE = date(2026, 12, 4)

CUSTOM_NETWORK = [
    {"slug": "austin-downtown", "detail": {"id": "C-1", "slug": "austin-downtown"}},
    {"slug": "tx/round-rock", "detail": {"id": "C-2", "slug": "tx/round-rock"}},
    {"slug": "dayton east", "detail": [{"id": "C-3", "slug": "dayton east"}]},
    {"slug": "listed-without-detail", "detail": None},
    {
        "slug": "unlisted-closed",
        "detail": {"id": "C-4", "slug": "unlisted-closed"},
        "listed": False,
    },
]

# A chat completion shaped like OpenAI's, with fixed values.
FIXED_COMPLETION = {
    "id": "chatcmpl-fixed",
    "object": "chat.completion",
    "created": 1796342400,
    "model": "fixed-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '{"events": []}'},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 412, "completion_tokens": 6, "total_tokens": 418},
}
RATE_LIMIT_BODY = {
    "error": {
        "message": "Rate limit reached for requests per min (RPM).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def detail_url(servers: SampleServers, encoded_slug: str) -> str:
    return f"{servers.data_api_url}/slug/{encoded_slug}"


def event_prompt(location: str = '"Austin, TX 78701"', window: int | None = 30) -> str:
    lines = [
        "Find family-friendly local events.",
        f"Today's date: {RUN_DATE.isoformat()}",
        f"Location: {location}",
    ]
    if window is not None:
        lines.append(f"Window: {window} days")
    lines.append("Answer with a JSON object with an events list.")
    return "\n".join(lines)


def openai_client(servers: SampleServers) -> openai.OpenAI:
    return openai.OpenAI(base_url=servers.llm_base_url, api_key="sample-key", max_retries=0)


def ask_events(client: openai.OpenAI, prompt: str, **options):
    return client.chat.completions.create(
        model="sample-events-1",
        messages=[
            {"role": "system", "content": "You list real local events as JSON."},
            {"role": "user", "content": prompt},
        ],
        response_format={"type": "json_object"},
        **options,
    )


@pytest.fixture(scope="module")
def default_servers():
    with SampleServers() as servers:
        yield servers


@pytest.fixture(scope="module")
def custom_servers():
    with SampleServers(CUSTOM_NETWORK) as servers:
        yield servers


# Location API: normal responses


def test_env_points_at_running_servers(default_servers):
    env = default_servers.env()

    assert env["LOCATION_SLUG_API_URL"] == default_servers.slug_api_url
    assert env["LOCATION_DATA_API_URL"] == default_servers.data_api_url
    assert env["LLM_BASE_URL"] == default_servers.llm_base_url
    assert env["LLM_API_KEY"] == "sample-key"
    assert env["LLM_MODEL"] == "sample-events-1"
    assert env["LLM_PROVIDER"] == "openai"
    for name in ("LOCATION_SLUG_API_URL", "LOCATION_DATA_API_URL", "LLM_BASE_URL"):
        assert env[name].startswith("http://127.0.0.1:"), name
    assert env["LLM_BASE_URL"].endswith("/v1")


def test_health_endpoints(default_servers):
    location = httpx.get(default_servers.location_url + "/health")
    llm = httpx.get(default_servers.llm_base_url.removesuffix("/v1") + "/health")

    assert location.status_code == 200
    assert location.json()["listed_centers"] == 25
    assert llm.status_code == 200
    assert llm.json()["mode"] == "sample"


def test_slug_list_default_is_bare_list(default_servers):
    response = httpx.get(default_servers.slug_api_url)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    slugs = response.json()
    assert slugs == [entry["slug"] for entry in load_sample_network()]


def test_slug_list_object_shape():
    with SampleServers(CUSTOM_NETWORK, slug_shape="object") as servers:
        body = httpx.get(servers.slug_api_url).json()

    listed = ["austin-downtown", "tx/round-rock", "dayton east", "listed-without-detail"]
    assert body == {"slugs": listed, "count": 4}


def test_slug_list_paginated_follows_next():
    network = make_synthetic_network(23)
    with SampleServers(network, slug_shape="paginated", page_size=10) as servers:
        pages = []
        url = servers.slug_api_url
        while url is not None:
            response = httpx.get(url)
            assert response.status_code == 200, url
            pages.append(response.json())
            url = pages[-1]["next"]
        past_end = httpx.get(servers.slug_api_url, params={"page": 4})

    assert [len(page["results"]) for page in pages] == [10, 10, 3]
    assert all(page["count"] == 23 for page in pages)
    assert pages[0]["previous"] is None
    assert pages[1]["previous"].endswith("page=1")
    slugs = [item["slug"] for page in pages for item in page["results"]]
    assert slugs == [entry["slug"] for entry in network]
    assert past_end.status_code == 404


def test_invalid_slug_shape_rejected():
    with pytest.raises(ValueError):
        SampleServers(CUSTOM_NETWORK, slug_shape="csv")


def test_detail_served_as_stored(default_servers):
    network = load_sample_network()

    for entry in network:
        response = httpx.get(detail_url(default_servers, entry["slug"]))
        assert response.status_code == 200, entry["slug"]
        assert response.json() == entry["detail"], entry["slug"]


def test_detail_unknown_slug_is_404(default_servers):
    response = httpx.get(detail_url(default_servers, "no-such-center"))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "no-such-center" in response.json()["error"]["message"]


def test_detail_slug_with_encoded_slash(custom_servers):
    encoded = httpx.get(detail_url(custom_servers, "tx%2Fround-rock"))
    lower_case_escape = httpx.get(detail_url(custom_servers, "tx%2fround-rock"))
    unencoded = httpx.get(detail_url(custom_servers, "tx/round-rock"))

    assert encoded.status_code == 200
    assert encoded.json() == {"id": "C-2", "slug": "tx/round-rock"}
    assert lower_case_escape.status_code == 200
    assert unencoded.status_code == 404
    assert "%2F" in unencoded.json()["error"]["message"]


def test_detail_slug_with_encoded_space(custom_servers):
    response = httpx.get(detail_url(custom_servers, "dayton%20east"))

    assert response.status_code == 200
    assert response.json() == [{"id": "C-3", "slug": "dayton east"}]


def test_detail_null_and_unlisted_entries(custom_servers):
    slugs = httpx.get(custom_servers.slug_api_url).json()
    missing_detail = httpx.get(detail_url(custom_servers, "listed-without-detail"))
    unlisted = httpx.get(detail_url(custom_servers, "unlisted-closed"))

    assert "listed-without-detail" in slugs
    assert missing_detail.status_code == 404
    assert "unlisted-closed" not in slugs
    assert unlisted.status_code == 200


def test_location_api_key_required_when_set():
    with SampleServers(CUSTOM_NETWORK, location_api_key="loc-key") as servers:
        without_key = httpx.get(servers.slug_api_url)
        wrong_key = httpx.get(servers.slug_api_url, headers={"Authorization": "Bearer other"})
        with_key = httpx.get(servers.slug_api_url, headers={"Authorization": "Bearer loc-key"})
        detail = httpx.get(
            detail_url(servers, "austin-downtown"), headers={"Authorization": "Bearer loc-key"}
        )

    assert without_key.status_code == 401
    assert wrong_key.status_code == 401
    assert with_key.status_code == 200
    assert detail.status_code == 200


def test_set_network_replaces_served_centers():
    with SampleServers(CUSTOM_NETWORK) as servers:
        servers.set_network(CUSTOM_NETWORK[:1])
        slugs = httpx.get(servers.slug_api_url).json()
        dropped = httpx.get(detail_url(servers, "tx%2Fround-rock"))

    assert slugs == ["austin-downtown"]
    assert dropped.status_code == 404


def test_duplicate_slug_in_network_rejected():
    with pytest.raises(ValueError, match="repeats the slug"):
        create_location_app(CUSTOM_NETWORK + CUSTOM_NETWORK[:1], FaultPlan())


# Bundled and synthetic networks


def test_bundled_network_has_varied_shapes():
    network = load_sample_network()
    details = {entry["slug"]: entry["detail"] for entry in network}

    assert len(network) == 25
    assert len(details) == 25
    assert details["boston-jamaica-plain"]["data"]["address"]["postalCode"] == 2130
    assert details["boston-jamaica-plain"]["data"]["address"]["state"] == "Massachusetts"
    assert details["burlington-church-street"]["zip"] == 5401
    assert details["chicago-lincoln-park"]["zipCode"] == "60614-2231"
    assert isinstance(details["dayton-oregon-district"], list)
    assert len(details["dayton-oregon-district"]) == 1
    assert details["boise-north-end"]["coming_soon"] == "1"
    assert details["tempe-mill-ave"]["is_active"] == "false"
    assert "&amp;" in details["seattle-northgate"]["name"]
    assert details["providence-downcity"]["data"]["address"]["postalCode"] == "02903"


def test_bundled_network_emails_use_example_domains():
    text = json.dumps(load_sample_network())
    emails = re.findall(r"[\w.+-]+@[\w.-]+", text)

    assert len(emails) >= 20
    for email in emails:
        assert email.lower().endswith(("@example.com", "@example.org")), email


def test_synthetic_network_cycles_real_places():
    network = make_synthetic_network(1000)
    slugs = [entry["slug"] for entry in network]

    assert len(network) == 1000
    assert len(set(slugs)) == 1000
    assert slugs[42] == "center-00042"
    first = network[0]["detail"]
    assert (first["city"], first["state"], first["zip"]) == SYNTHETIC_PLACES[0]
    wrapped = network[len(SYNTHETIC_PLACES)]["detail"]
    assert (wrapped["city"], wrapped["state"], wrapped["zip"]) == SYNTHETIC_PLACES[0]
    assert all(re.fullmatch(r"\d{5}", entry["detail"]["zip"]) for entry in network)


def test_synthetic_network_widens_slugs_past_99999():
    assert make_synthetic_network(0) == []
    assert make_synthetic_network(100_001)[-1]["slug"] == "center-100000"
    with pytest.raises(ValueError):
        make_synthetic_network(-1)


# LLM API: normal responses


def test_llm_events_through_openai_sdk(default_servers):
    completion = ask_events(openai_client(default_servers), event_prompt(window=30))

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "sample-events-1"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    total = completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.usage.total_tokens == total

    events = json.loads(completion.choices[0].message.content)["events"]
    assert 2 <= len(events) <= 4
    for event in events:
        event_date = date.fromisoformat(event["date"])
        assert RUN_DATE <= event_date < RUN_DATE + timedelta(days=30), event
        if event["end_date"] is not None:
            end_date = date.fromisoformat(event["end_date"])
            assert event_date < end_date < RUN_DATE + timedelta(days=30), event
        assert event["name"].startswith("Sample: "), event
        assert event["name"].endswith("(sample data)"), event
        assert "sample data" in event["description"].lower(), event
        assert event["url"].startswith("https://events.example.org/"), event
        assert event["is_sample_data"] is True
        assert event["city"] == "Austin"
        assert event["state"] == "TX"


def test_llm_echoes_request_model(default_servers):
    completion = openai_client(default_servers).chat.completions.create(
        model="any-model-name",
        messages=[{"role": "user", "content": event_prompt()}],
    )

    assert completion.model == "any-model-name"


def test_llm_events_are_deterministic(default_servers):
    client = openai_client(default_servers)
    first = ask_events(client, event_prompt(location="Boston, MA 02130"))
    second = ask_events(client, event_prompt(location="Boston, MA 02130"))
    other_place = ask_events(client, event_prompt(location="Seattle, WA 98125"))

    first_events = json.loads(first.choices[0].message.content)["events"]
    second_events = json.loads(second.choices[0].message.content)["events"]
    other_events = json.loads(other_place.choices[0].message.content)["events"]
    assert first_events == second_events
    assert first_events != other_events
    assert other_events[0]["city"] == "Seattle"


@pytest.mark.parametrize("window", [1, 2, 7, 30, 90])
def test_llm_events_inside_window(default_servers, window):
    completion = ask_events(openai_client(default_servers), event_prompt(window=window))

    events = json.loads(completion.choices[0].message.content)["events"]
    last_day = RUN_DATE + timedelta(days=max(window - 1, 0))
    for event in events:
        assert RUN_DATE <= date.fromisoformat(event["date"]) <= last_day, event
        if event["end_date"] is not None:
            assert date.fromisoformat(event["end_date"]) <= last_day, event


def test_llm_window_defaults_to_30_days(default_servers):
    completion = ask_events(openai_client(default_servers), event_prompt(window=None))

    events = json.loads(completion.choices[0].message.content)["events"]
    for event in events:
        assert RUN_DATE <= date.fromisoformat(event["date"]) < RUN_DATE + timedelta(days=30)


@pytest.mark.parametrize(
    ("location", "city", "state"),
    [
        ('"Austin, TX 78701"', "Austin", "TX"),
        ("Austin, TX 78701 (within 15 miles)", "Austin", "TX"),
        ("Salt Lake City, UT", "Salt Lake City", "UT"),
        ("Boston, Massachusetts 02130", "Boston", "Massachusetts"),
        ("somewhere without a comma", "somewhere without a comma", None),
    ],
)
def test_llm_reads_city_and_state(default_servers, location, city, state):
    completion = ask_events(openai_client(default_servers), event_prompt(location=location))

    events = json.loads(completion.choices[0].message.content)["events"]
    assert events[0]["city"] == city
    assert events[0]["state"] == state


def test_llm_reads_list_content_parts(default_servers):
    completion = openai_client(default_servers).chat.completions.create(
        model="sample-events-1",
        messages=[{"role": "user", "content": [{"type": "text", "text": event_prompt()}]}],
    )

    events = json.loads(completion.choices[0].message.content)["events"]
    assert events[0]["city"] == "Austin"


def test_llm_max_tokens_cuts_answer(default_servers):
    completion = ask_events(openai_client(default_servers), event_prompt(), max_tokens=20)

    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 20
    with pytest.raises(json.JSONDecodeError):
        json.loads(completion.choices[0].message.content)


def test_llm_models_list(default_servers):
    models = openai_client(default_servers).models.list()
    model = openai_client(default_servers).models.retrieve("sample-events-1")

    assert [item.id for item in models.data] == ["sample-events-1"]
    assert model.id == "sample-events-1"
    with pytest.raises(openai.NotFoundError):
        openai_client(default_servers).models.retrieve("no-such-model")


def test_llm_rejects_invalid_requests(default_servers):
    url = default_servers.llm_base_url + "/chat/completions"
    no_messages = httpx.post(url, json={"model": "sample-events-1"})
    not_json = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    streaming = httpx.post(
        url,
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    )

    assert no_messages.status_code == 400
    assert "messages" in no_messages.json()["error"]["message"]
    assert not_json.status_code == 400
    assert streaming.status_code == 400
    assert "stream" in streaming.json()["error"]["message"]


def test_llm_api_key_enforced_when_set():
    with SampleServers(CUSTOM_NETWORK, llm_api_key="right-key") as servers:
        wrong = openai.OpenAI(base_url=servers.llm_base_url, api_key="wrong", max_retries=0)
        right = openai.OpenAI(base_url=servers.llm_base_url, api_key="right-key", max_retries=0)
        env_key = servers.env()["LLM_API_KEY"]

        with pytest.raises(openai.AuthenticationError) as raised:
            ask_events(wrong, event_prompt())
        completion = ask_events(right, event_prompt())

    assert raised.value.code == "invalid_api_key"
    assert completion.choices[0].finish_reason == "stop"
    assert env_key == "right-key"


# Faults


def test_error_rate_one_returns_status_everywhere():
    location_faults = FaultPlan(
        slugs=KindFaults(error_rate=1.0, error_status=500),
        detail=KindFaults(error_rate=1.0, error_status=503),
    )
    llm_faults = FaultPlan(llm=KindFaults(error_rate=1.0, error_status=502))
    with SampleServers(
        CUSTOM_NETWORK, location_faults=location_faults, llm_faults=llm_faults
    ) as servers:
        slugs = httpx.get(servers.slug_api_url)
        detail = httpx.get(detail_url(servers, "austin-downtown"))
        with pytest.raises(openai.InternalServerError) as raised:
            ask_events(openai_client(servers), event_prompt())

    assert slugs.status_code == 500
    assert "error" in slugs.json()
    assert detail.status_code == 503
    assert raised.value.status_code == 502
    assert raised.value.type == "server_error"


def test_rate_limit_sends_retry_after():
    location_faults = FaultPlan(
        detail=KindFaults(error_rate=1.0, error_status=429, retry_after_seconds=2.5)
    )
    llm_faults = FaultPlan(llm=KindFaults(error_rate=1.0, error_status=429))
    no_header_faults = FaultPlan(
        detail=KindFaults(error_rate=1.0, error_status=429, retry_after_seconds=None)
    )
    with SampleServers(
        CUSTOM_NETWORK, location_faults=location_faults, llm_faults=llm_faults
    ) as servers:
        detail = httpx.get(detail_url(servers, "austin-downtown"))
        with pytest.raises(openai.RateLimitError) as raised:
            ask_events(openai_client(servers), event_prompt())
        servers.location_faults = no_header_faults
        without_header = httpx.get(detail_url(servers, "austin-downtown"))

    assert detail.status_code == 429
    assert detail.headers["retry-after"] == "3"
    assert detail.headers["retry-after-ms"] == "2500"
    assert raised.value.response.headers["retry-after"] == "1"
    assert raised.value.code == "rate_limit_exceeded"
    assert without_header.status_code == 429
    assert "retry-after" not in without_header.headers


def test_fail_first_then_success_per_slug():
    faults = FaultPlan(detail=KindFaults(fail_first=2, error_status=503))
    with SampleServers(CUSTOM_NETWORK, location_faults=faults) as servers:
        austin = [httpx.get(detail_url(servers, "austin-downtown")).status_code for _ in range(4)]
        round_rock = [
            httpx.get(detail_url(servers, "tx%2Fround-rock")).status_code for _ in range(3)
        ]

    assert austin == [503, 503, 200, 200]
    assert round_rock == [503, 503, 200]


def test_fail_first_for_llm_per_location():
    faults = FaultPlan(llm=KindFaults(fail_first=1, error_status=500))
    with SampleServers(CUSTOM_NETWORK, llm_faults=faults) as servers:
        client = openai_client(servers)
        with pytest.raises(openai.InternalServerError):
            ask_events(client, event_prompt(location="Austin, TX 78701"))
        austin_retry = ask_events(client, event_prompt(location="Austin, TX 78701"))
        with pytest.raises(openai.InternalServerError):
            ask_events(client, event_prompt(location="Dayton, OH 45402"))

    assert austin_retry.choices[0].finish_reason == "stop"


def test_fail_slugs_and_slugs_down():
    faults = FaultPlan(fail_slugs={"austin-downtown"}, fail_slugs_status=500, slugs_down=True)
    with SampleServers(CUSTOM_NETWORK, location_faults=faults) as servers:
        slugs = httpx.get(servers.slug_api_url)
        failing = [httpx.get(detail_url(servers, "austin-downtown")).status_code for _ in range(3)]
        other = httpx.get(detail_url(servers, "tx%2Fround-rock"))

    assert slugs.status_code == 503
    assert failing == [500, 500, 500]
    assert other.status_code == 200


def test_malformed_body_is_invalid_json():
    location_faults = FaultPlan(
        slugs=KindFaults(malformed_rate=1.0), detail=KindFaults(malformed_rate=1.0)
    )
    llm_faults = FaultPlan(llm=KindFaults(malformed_rate=1.0))
    with SampleServers(
        CUSTOM_NETWORK, location_faults=location_faults, llm_faults=llm_faults
    ) as servers:
        slugs = httpx.get(servers.slug_api_url)
        detail = httpx.get(detail_url(servers, "austin-downtown"))
        unknown = httpx.get(detail_url(servers, "no-such-center"))
        completion = httpx.post(
            servers.llm_base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": event_prompt()}]},
        )

    for response in (slugs, detail, completion):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert unknown.status_code == 404


def test_truncated_answer_has_length_finish_reason():
    faults = FaultPlan(llm=KindFaults(truncated_answer_rate=1.0))
    with SampleServers(CUSTOM_NETWORK, llm_faults=faults) as servers:
        completion = ask_events(openai_client(servers), event_prompt())

    assert completion.choices[0].finish_reason == "length"
    content = completion.choices[0].message.content
    assert content.startswith('{"events": [')
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)


def test_error_rate_is_deterministic_for_seed():
    def statuses(seed: int) -> list[int]:
        faults = FaultPlan(seed=seed, detail=KindFaults(error_rate=0.5, error_status=500))
        with SampleServers(CUSTOM_NETWORK, location_faults=faults) as servers:
            with httpx.Client() as client:
                return [
                    client.get(detail_url(servers, "austin-downtown")).status_code
                    for _ in range(40)
                ]

    first = statuses(seed=7)
    again = statuses(seed=7)
    other_seed = statuses(seed=8)

    assert first == again
    assert first != other_seed
    assert 8 <= first.count(500) <= 32


def test_faults_replaced_while_serving():
    with SampleServers(CUSTOM_NETWORK) as servers:
        before = httpx.get(servers.slug_api_url)
        servers.location_faults = FaultPlan(slugs_down=True)
        during = httpx.get(servers.slug_api_url)
        servers.location_faults = FaultPlan()
        after = httpx.get(servers.slug_api_url)

    assert [before.status_code, during.status_code, after.status_code] == [200, 503, 200]


def test_decide_fault_order():
    plan = FaultPlan(
        slugs_down=True,
        fail_slugs={"a"},
        fail_slugs_status=404,
        detail=KindFaults(fail_first=1, error_status=429, malformed_rate=1.0),
        llm=KindFaults(truncated_answer_rate=1.0),
    )

    assert decide_fault(plan, RequestKind.SLUGS, "all", 1).status == 503
    assert decide_fault(plan, RequestKind.DETAIL, "a", 5).status == 404
    first_try = decide_fault(plan, RequestKind.DETAIL, "b", 1)
    assert first_try.status == 429
    assert first_try.retry_after_seconds == 1.0
    assert decide_fault(plan, RequestKind.DETAIL, "b", 2).type is FaultType.MALFORMED
    assert decide_fault(plan, RequestKind.LLM, "Austin", 1).type is FaultType.TRUNCATED
    assert decide_fault(FaultPlan(), RequestKind.DETAIL, "b", 1) is None


def test_fault_plan_rejects_invalid_rates():
    with pytest.raises(ValueError):
        KindFaults(error_rate=1.5)
    with pytest.raises(ValueError):
        KindFaults(error_status=200)
    with pytest.raises(ValueError):
        FaultPlan(latency_ms=-1)


# Request counters


def test_request_counters_by_kind_and_key():
    with SampleServers(CUSTOM_NETWORK) as servers:
        httpx.get(servers.slug_api_url)
        for _ in range(3):
            httpx.get(detail_url(servers, "austin-downtown"))
        httpx.get(detail_url(servers, "tx%2Fround-rock"))
        ask_events(openai_client(servers), event_prompt(location="Austin, TX 78701"))
        location_counts = servers.location_counter.snapshot()
        llm_counts = servers.llm_counter.snapshot()
        servers.location_counter.reset()
        after_reset = servers.location_counter.snapshot()

    assert location_counts.total == 5
    assert location_counts.by_kind == {"slugs": 1, "detail": 4, "llm": 0}
    assert location_counts.by_slug == {"austin-downtown": 3, "tx/round-rock": 1}
    assert llm_counts.by_kind["llm"] == 1
    assert llm_counts.by_location == {"Austin, TX 78701": 1}
    assert after_reset.total == 0
    assert after_reset.by_slug == {}


def test_request_counter_counts_failed_requests():
    faults = FaultPlan(detail=KindFaults(error_rate=1.0))
    with SampleServers(CUSTOM_NETWORK, location_faults=faults) as servers:
        for _ in range(2):
            httpx.get(detail_url(servers, "austin-downtown"))
        counts = servers.location_counter.snapshot()

    assert counts.by_slug == {"austin-downtown": 2}


# Scripted LLM responses


def test_scripted_mode_replays_in_order():
    script = [
        {"status": 429, "headers": {"Retry-After": "0"}, "body": RATE_LIMIT_BODY},
        {"status": 200, "body": FIXED_COMPLETION},
        {"status": 200, "body": '{"id": "chatcmpl-cut", "choices": [{"ind'},
    ]
    with SampleServers(CUSTOM_NETWORK, llm_script=script) as servers:
        client = openai_client(servers)
        with pytest.raises(openai.RateLimitError) as raised:
            ask_events(client, event_prompt())
        replayed = ask_events(client, event_prompt())
        url = servers.llm_base_url + "/chat/completions"
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        cut = httpx.post(url, json=request)
        repeated = httpx.post(url, json=request)
        health = httpx.get(servers.llm_base_url.removesuffix("/v1") + "/health").json()
        counts = servers.llm_counter.snapshot()

    assert raised.value.response.headers["retry-after"] == "0"
    assert raised.value.code == "rate_limit_exceeded"
    assert replayed.id == "chatcmpl-fixed"
    assert replayed.model == "fixed-model"
    assert replayed.choices[0].message.content == '{"events": []}'
    assert cut.status_code == 200
    assert cut.text == '{"id": "chatcmpl-cut", "choices": [{"ind'
    assert repeated.text == cut.text
    assert health["mode"] == "scripted"
    assert counts.by_kind["llm"] == 4


def test_scripted_mode_rejects_invalid_scripts():
    with pytest.raises(ValueError, match="at least one"):
        create_llm_app(FaultPlan(), scripted=[])
    with pytest.raises(ValueError, match="body"):
        create_llm_app(FaultPlan(), scripted=[{"status": 200}])
    with pytest.raises(ValueError, match="status"):
        create_llm_app(FaultPlan(), scripted=[{"status": "ok", "body": {}}])


# Concurrency and lifecycle


def test_concurrent_requests_overlap():
    latency_ms = 200
    request_count = 50
    faults = FaultPlan(latency_ms=latency_ms)
    network = make_synthetic_network(request_count)

    async def fetch_all(servers: SampleServers) -> tuple[list[int], list[str], float]:
        limits = httpx.Limits(max_connections=request_count)
        llm = openai.AsyncOpenAI(base_url=servers.llm_base_url, api_key="sample-key", max_retries=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            started = time.perf_counter()
            details = asyncio.gather(
                *(client.get(detail_url(servers, entry["slug"])) for entry in network)
            )
            answers = asyncio.gather(
                *(
                    llm.chat.completions.create(
                        model="sample-events-1",
                        messages=[{"role": "user", "content": event_prompt(location=f"Place {i}")}],
                    )
                    for i in range(request_count)
                )
            )
            responses, completions = await asyncio.gather(details, answers)
            elapsed = time.perf_counter() - started
        await llm.close()
        reasons = [completion.choices[0].finish_reason for completion in completions]
        return [response.status_code for response in responses], reasons, elapsed

    with SampleServers(network, location_faults=faults, llm_faults=faults) as servers:
        statuses, finish_reasons, elapsed = asyncio.run(fetch_all(servers))

    serial_seconds = 2 * request_count * latency_ms / 1000
    print(
        f"{2 * request_count} concurrent requests with {latency_ms} ms latency took "
        f"{elapsed:.2f} s (serial would take {serial_seconds:.0f} s)"
    )
    assert statuses == [200] * request_count
    assert finish_reasons == ["stop"] * request_count
    assert elapsed < 5


def test_fixed_port_and_port_in_use():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with SampleServers(CUSTOM_NETWORK, location_port=free_port) as servers:
        assert servers.slug_api_url == f"http://127.0.0.1:{free_port}/api/slugs"
        with pytest.raises(OSError, match="Choose another port"):
            SampleServers(CUSTOM_NETWORK, llm_port=free_port).start()
        response = httpx.get(servers.slug_api_url)

    assert response.status_code == 200


def test_urls_unavailable_before_start():
    servers = SampleServers(CUSTOM_NETWORK)

    with pytest.raises(RuntimeError, match="not running"):
        servers.slug_api_url
    servers.stop()


def test_stop_closes_servers():
    with SampleServers(CUSTOM_NETWORK) as servers:
        url = servers.slug_api_url

    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_serve_forever_until_stop_event(caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        location_port = probe.getsockname()[1]
    stop_event = threading.Event()
    caplog.set_level("INFO", logger="center_pipeline.sample_servers.server")
    thread = threading.Thread(
        target=serve_forever,
        args=(location_port, 0),
        kwargs={"network": CUSTOM_NETWORK, "stop_event": stop_event},
    )
    thread.start()
    try:
        url = f"http://127.0.0.1:{location_port}/health"
        deadline = time.monotonic() + 10
        while True:
            try:
                health = httpx.get(url)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "serve_forever did not start"
                time.sleep(0.05)
    finally:
        stop_event.set()
        thread.join(timeout=15)

    assert health.status_code == 200
    assert not thread.is_alive()
    assert "export LOCATION_SLUG_API_URL=http://127.0.0.1:" in caplog.text
    assert "export LLM_API_KEY=sample-key" in caplog.text
