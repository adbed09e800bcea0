"""Tests of the Responses API client and its citation rule, against the sample LLM server."""

import json
from collections.abc import Iterator
from datetime import date

import openai
import pytest

from center_pipeline.events.grounded import (
    Citation,
    CitationMatcher,
    GroundedEventsClient,
    events_from_grounded_answer,
)
from center_pipeline.events.llm_client import LlmAnswerError, LlmRequestError
from center_pipeline.events.models import Event
from center_pipeline.events.prompt import render_prompt
from center_pipeline.sample_servers.server import SampleServers

RUN_DATE = date(2026, 12, 4)
WINDOW_DAYS = 30
MODEL = "sample-events-1"


@pytest.fixture(scope="module")
def sample_servers() -> Iterator[SampleServers]:
    with SampleServers(network=[]) as servers:
        yield servers


def make_client(servers: SampleServers) -> GroundedEventsClient:
    return GroundedEventsClient(
        api_key="sample-key",
        model=MODEL,
        base_url=servers.llm_base_url,
        timeout_seconds=10,
        backoff_seconds=0.01,
        max_attempts=3,
    )


def prompts() -> tuple[str, str]:
    system_prompt, user_prompt = render_prompt(
        center_name="Austin Downtown",
        city="Austin",
        state="TX",
        zip="78701",
        radius_miles=15,
        today=RUN_DATE,
        window_days=WINDOW_DAYS,
        web_search=True,
    )
    return user_prompt, system_prompt


def search_scripted(script: list[dict]) -> tuple[int, object]:
    """Run one search against a server that replays `script`.

    Returns:
        The number of requests the server received, and the answer or the error raised.
    """
    with SampleServers(network=[], llm_script=script) as servers:
        with make_client(servers) as client:
            try:
                outcome = client.search(*prompts())
            except Exception as error:  # noqa: BLE001 - the test inspects the error
                outcome = error
        requests = servers.llm_counter.snapshot().total
    return requests, outcome


def response_body(
    text: str,
    annotations: list[dict] | None = None,
    *,
    search_calls: int = 1,
    **fields,
) -> dict:
    """A Responses API body with `search_calls` web searches and one output_text message."""
    output = [
        {"type": "web_search_call", "id": f"ws_{i}", "status": "completed"}
        for i in range(search_calls)
    ]
    output.append(
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": annotations or []}],
        }
    )
    body = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": MODEL,
        "output": output,
        "usage": {"input_tokens": 120, "output_tokens": 80, "total_tokens": 200},
    }
    body.update(fields)
    return body


def events_text(*events: dict) -> str:
    return json.dumps({"events": list(events)})


def test_sample_search_cites_events(sample_servers):
    with make_client(sample_servers) as client:
        answer = client.search(*prompts())

    sourced = events_from_grounded_answer(answer, RUN_DATE, WINDOW_DAYS)

    assert answer.usage.tool_calls in (1, 2)
    assert answer.usage.input_tokens > 0
    assert answer.usage.output_tokens > 0
    assert sourced.dropped_unsourced == 1
    assert len(sourced.events) == len(answer.citations) >= 2
    for event in sourced.events:
        assert event.url is not None
        assert event.source_url == f"{event.url}?utm_source=sample-llm"


def test_sample_without_tool_cites_nothing(sample_servers):
    sdk = openai.OpenAI(api_key="sample-key", base_url=sample_servers.llm_base_url, max_retries=0)
    user_prompt, system_prompt = prompts()

    response = sdk.responses.create(
        model=MODEL,
        input=[
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user_prompt},
        ],
    )

    assert [item.type for item in response.output] == ["message"]
    assert response.output[0].content[0].annotations == []
    assert "events" in json.loads(response.output_text)


def test_sample_rejects_live_search(sample_servers):
    sdk = openai.OpenAI(api_key="sample-key", base_url=sample_servers.llm_base_url, max_retries=0)

    with pytest.raises(openai.APIStatusError) as error:
        sdk.responses.create(
            model=MODEL, input="events", extra_body={"search_parameters": {"mode": "on"}}
        )

    assert error.value.status_code == 410
    assert "Agent Tools API" in error.value.response.text


@pytest.mark.parametrize("status", [404, 405])
def test_missing_responses_api_names_fix(status):
    requests, error = search_scripted([{"status": status, "body": {"detail": "Not Found"}}])

    assert isinstance(error, LlmRequestError)
    assert error.status_code == status
    assert "no Responses API" in str(error)
    assert "LLM_WEB_SEARCH=false" in str(error)
    assert requests == 1


def test_unknown_model_keeps_generic_error():
    body = {
        "error": {
            "message": "The model 'nope' does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }

    _, error = search_scripted([{"status": 404, "body": body}])

    assert isinstance(error, LlmRequestError)
    assert "model name" in str(error)
    assert "LLM_WEB_SEARCH" not in str(error)


def test_rejected_tool_names_fix():
    body = {"error": {"message": "Tool 'web_search' is not supported with this model."}}

    _, error = search_scripted([{"status": 400, "body": body}])

    assert isinstance(error, LlmRequestError)
    assert "LLM_WEB_SEARCH=false" in str(error)


def test_transient_error_retried():
    overloaded = {"error": {"message": "overloaded", "type": "server_error"}}
    answer_body = response_body(events_text())

    requests, answer = search_scripted(
        [{"status": 503, "body": overloaded}, {"status": 200, "body": answer_body}]
    )

    assert answer.attempts == 2
    assert requests == 2


def test_truncated_answer_fails_with_usage():
    body = response_body(
        '{"events": [{"name": "Cut',
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
    )
    _, answer = search_scripted([{"status": 200, "body": body}])

    with pytest.raises(LlmAnswerError) as error:
        events_from_grounded_answer(answer, RUN_DATE, WINDOW_DAYS)

    assert "truncated" in str(error.value)
    assert error.value.usage.output_tokens == 80
    assert error.value.usage.tool_calls == 1


def test_refusal_fails():
    body = response_body("")
    body["output"][-1]["content"] = [{"type": "refusal", "refusal": "I cannot help with that."}]
    _, answer = search_scripted([{"status": 200, "body": body}])

    with pytest.raises(LlmAnswerError) as error:
        events_from_grounded_answer(answer, RUN_DATE, WINDOW_DAYS)

    assert "refused" in str(error.value)
    assert "cannot help" in str(error.value)


def test_xai_citation_list_sources_event():
    listed = {"name": "Harvest Festival", "date": "2026-12-10", "url": "https://a.example.org/h"}
    unlisted = {"name": "Winter Fair", "date": "2026-12-11", "url": "https://b.example.org/w"}
    body = response_body(
        events_text(listed, unlisted), citations=["https://a.example.org/h", "x.com/post"]
    )
    _, answer = search_scripted([{"status": 200, "body": body}])

    sourced = events_from_grounded_answer(answer, RUN_DATE, WINDOW_DAYS)

    assert [event.name for event in sourced.events] == ["Harvest Festival"]
    assert sourced.events[0].source_url == "https://a.example.org/h"
    assert sourced.dropped_unsourced == 1
    assert sourced.dropped == 1


def test_billable_searches_counted():
    body = response_body(events_text(), search_calls=3)
    body["tool_usage"] = {"web_search": {"num_requests": 2}, "image_gen": {}}
    plain = response_body(events_text(), search_calls=3)

    _, billed = search_scripted([{"status": 200, "body": body}])
    _, counted = search_scripted([{"status": 200, "body": plain}])

    assert billed.usage.tool_calls == 2
    assert counted.usage.tool_calls == 3


HARVEST = {"name": "Harvest Festival", "date": "2026-12-10", "url": "https://a.example.org/h/"}
WINTER = {"name": "Winter Craft Fair", "date": "2026-12-11", "url": None}
MARKET = {"name": "Market", "date": "2026-12-12", "url": None}
TEXT = "Found these: " + events_text(HARVEST, WINTER, MARKET)


def span_of(raw_event: dict) -> tuple[int, int]:
    start = TEXT.index(json.dumps(raw_event))
    return start, start + len(json.dumps(raw_event))


HARVEST_START, HARVEST_END = span_of(HARVEST)
WINTER_START, WINTER_END = span_of(WINTER)


@pytest.mark.parametrize(
    ("citations", "expected"),
    [
        pytest.param(
            [Citation(url="https://A.example.org/h?utm_source=openai#top")],
            {"Harvest Festival": "https://A.example.org/h?utm_source=openai#top"},
            id="own url in another form",
        ),
        pytest.param(
            [
                Citation(
                    url="https://c.example.org/",
                    start_index=HARVEST_START + 2,
                    end_index=HARVEST_START + 9,
                ),
                Citation(url="http://a.example.org/h"),
            ],
            {"Harvest Festival": "http://a.example.org/h"},
            id="own url before span",
        ),
        pytest.param(
            [
                Citation(
                    url="https://w.example.org/fair",
                    start_index=WINTER_START - 1,
                    end_index=WINTER_START + 3,
                )
            ],
            {"Winter Craft Fair": "https://w.example.org/fair"},
            id="span overlaps object",
        ),
        pytest.param(
            [
                Citation(
                    url="https://w.example.org/fair",
                    start_index=WINTER_START + 1,
                    end_index=WINTER_START + 1,
                )
            ],
            {"Winter Craft Fair": "https://w.example.org/fair"},
            id="point inside object",
        ),
        pytest.param(
            [Citation(url="https://w.example.org/fair", start_index=0, end_index=5)],
            {},
            id="span outside objects",
        ),
        pytest.param(
            [Citation(url="https://city.example.gov/", title="Winter  craft fair 2026 | City")],
            {"Winter Craft Fair": "https://city.example.gov/"},
            id="title contains name",
        ),
        pytest.param(
            [Citation(url="https://m.example.org/", title="Market days downtown")],
            {},
            id="short name never matches title",
        ),
        pytest.param(
            [Citation(url="ftp://a.example.org/h/"), Citation(url="a.example.org/h")],
            {},
            id="not an http url",
        ),
    ],
)
def test_citation_rule(citations, expected):
    matcher = CitationMatcher(TEXT, citations)
    sources = {}
    for raw_event in (HARVEST, WINTER, MARKET):
        source = matcher.source_for(Event.model_validate(raw_event))
        if source is not None:
            sources[raw_event["name"]] = source

    assert sources == expected


def test_same_name_events_get_own_spans():
    first = {"name": "Story Time", "date": "2026-12-10"}
    second = {"name": "Story Time", "date": "2026-12-17"}
    text = events_text(first, second)
    second_start = text.index(json.dumps(second))
    citation = Citation(
        url="https://lib.example.org/", start_index=second_start + 1, end_index=second_start + 4
    )
    matcher = CitationMatcher(text, [citation])

    assert matcher.source_for(Event.model_validate(first)) is None
    assert matcher.source_for(Event.model_validate(second)) == "https://lib.example.org/"
