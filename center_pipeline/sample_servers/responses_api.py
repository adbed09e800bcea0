"""The Responses API route of the sample LLM server, with a sample web search tool.

Route:
    POST /v1/responses: a `response` body. With the `web_search` tool in the request, its
        output lists `web_search_call` items, then a message whose `output_text` is the JSON
        object `{"events": [...]}` with one `url_citation` annotation per sourced event.
        Without the tool, the message carries the same events and no citations.

The events are those of the chat-completions route for the same prompt, plus one event
that no citation supports, so that the pipeline's rule for unsourced events runs in the
demo. A request with xAI's retired `search_parameters` gets HTTP 410, as it does at xAI.
Faults, scripted mode and the API key check work as on the chat-completions route.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from center_pipeline.sample_servers.faults import (
    FaultPlan,
    FaultType,
    RequestKind,
    decide_fault,
)
from center_pipeline.sample_servers.llm_api import (
    scripted_or_unauthorized,
    start_llm_request,
    SAMPLE_NOTE,
    PromptFacts,
    _estimate_tokens,
    _fault_response,
    _message_texts,
    _openai_error,
    make_sample_events,
    read_prompt_facts,
)

logger = logging.getLogger(__name__)

WEB_SEARCH_TOOL_TYPES = ("web_search", "web_search_preview")
# Query parameter added to every cited URL. Providers may add tracking parameters to the
# URLs they cite, and the pipeline's citation matching must see past them.
CITATION_QUERY = "utm_source=sample-llm"
# The error message of xAI's HTTP 410 for `search_parameters`, since it retired live search.
LIVE_SEARCH_GONE = (
    "Live search is deprecated. Please switch to the Agent Tools API: "
    "https://docs.x.ai/docs/guides/tools/overview"
)


def add_responses_route(
    app: FastAPI, script: list[dict[str, Any]], api_key: str | None
) -> None:
    """Add POST /v1/responses to the sample LLM app.

    Args:
        app: The app of `create_llm_app`, whose `state` contains the faults, the request
            counter and the script position that both routes share.
        script: Validated scripted responses, or an empty list for sample answers.
        api_key: When set, requests without `Authorization: Bearer <api_key>` get 401.
    """

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        facts = read_prompt_facts(input_messages(payload))
        plan: FaultPlan = app.state.faults
        attempt, script_position = await start_llm_request(app, facts.location)

        early = scripted_or_unauthorized(request, script, script_position, api_key, facts)
        if early is not None:
            return early
        if isinstance(payload, dict) and "search_parameters" in payload:
            logger.info("Rejected Responses request with search_parameters")
            return JSONResponse({"code": "Gone", "error": LIVE_SEARCH_GONE}, status_code=410)
        problem = find_request_problem(payload)
        if problem is not None:
            logger.info("Rejected invalid Responses request: %s", problem)
            return _openai_error(400, problem, "invalid_request_error")

        fault = decide_fault(plan, RequestKind.LLM, facts.location, attempt)
        truncate = fault is not None and fault.type is FaultType.TRUNCATED
        body = build_response(payload, facts, truncate=truncate)
        if fault is not None:
            logger.debug(
                "Injecting %s into Responses request %r #%d", fault, facts.location, attempt
            )
        if fault is not None and not truncate:
            return _fault_response(fault, body)
        return JSONResponse(body, headers={"x-request-id": f"req_{uuid.uuid4().hex}"})


def input_messages(payload: Any) -> list[dict[str, Any]]:
    """Return the request's `instructions` and `input` as chat-style messages."""
    if not isinstance(payload, dict):
        return []
    messages: list[dict[str, Any]] = []
    if isinstance(payload.get("instructions"), str):
        messages.append({"role": "system", "content": payload["instructions"]})
    items = payload.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        messages.extend(item for item in items if isinstance(item, dict))
    return messages


def find_request_problem(payload: Any) -> str | None:
    """Return why a Responses request is invalid, or None if it is valid."""
    if not isinstance(payload, dict):
        return "The request body must be a JSON object."
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return "Missing required parameter: 'model'."
    if not input_messages(payload):
        return "Missing required parameter: 'input'."
    if payload.get("stream"):
        return "The sample server does not support stream=true. Send the request without it."
    tools = payload.get("tools") or []
    if not isinstance(tools, list):
        return "Invalid type for 'tools': expected an array."
    for tool in tools:
        tool_type = tool.get("type") if isinstance(tool, dict) else None
        if tool_type not in WEB_SEARCH_TOOL_TYPES:
            return f"Unsupported tool type: {tool_type!r}. The sample server offers web_search."
    return None


def build_response(
    payload: dict[str, Any], facts: PromptFacts, *, truncate: bool = False
) -> dict[str, Any]:
    """Build a `response` body with the sample events, cited if the request has web search.

    The text is cut short with status "incomplete" when `truncate` is true or when it would
    exceed the request's `max_output_tokens`.
    """
    searched = any(
        isinstance(tool, dict) and tool.get("type") in WEB_SEARCH_TOOL_TYPES
        for tool in payload.get("tools") or []
    )
    events = make_sample_events(facts) + [_unsourced_event(facts)]
    text, annotations = _text_with_citations(events, cite=searched)
    output_tokens = _estimate_tokens(text)
    incomplete_reason = None

    token_limit = payload.get("max_output_tokens")
    if isinstance(token_limit, int) and 0 < token_limit < output_tokens:
        text = text[: token_limit * 4]
        output_tokens = token_limit
        incomplete_reason = "max_output_tokens"
    if truncate:
        text = text[: len(text) // 2]
        output_tokens = _estimate_tokens(text)
        incomplete_reason = "max_output_tokens"
    annotations = [item for item in annotations if item["end_index"] <= len(text)]

    output: list[dict[str, Any]] = []
    if searched:
        output.extend(_search_calls(facts))
    output.append(
        {
            "type": "message",
            "id": f"msg_sample{uuid.uuid4().hex[:24]}",
            "status": "incomplete" if incomplete_reason else "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}
            ],
        }
    )
    input_tokens = sum(
        _estimate_tokens(text) + 4 for _, text in _message_texts(input_messages(payload))
    )
    return {
        "id": f"resp_sample{uuid.uuid4().hex[:24]}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if incomplete_reason else "completed",
        "error": None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": payload["model"],
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": payload.get("tools") or [],
        "max_output_tokens": token_limit if isinstance(token_limit, int) else None,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _text_with_citations(
    events: list[dict[str, Any]], *, cite: bool
) -> tuple[str, list[dict[str, Any]]]:
    """Serialize `{"events": [...]}` and cite the URL of each event that has one.

    Each annotation spans the event's URL inside the JSON text, where a model that searched
    the web writes the page it found the event on.
    """
    text = json.dumps({"events": events}, ensure_ascii=False)
    annotations = []
    if not cite:
        return text, annotations
    position = 0
    for event in events:
        url = event.get("url")
        if not url:
            continue
        quoted = json.dumps(url, ensure_ascii=False)
        start = text.index(quoted, position) + 1
        end = start + len(quoted) - 2
        position = end
        annotations.append(
            {
                "type": "url_citation",
                "start_index": start,
                "end_index": end,
                "url": f"{url}?{CITATION_QUERY}",
                "title": f"{event['name']} - {event.get('city') or 'local'} events",
            }
        )
    return text, annotations


def _unsourced_event(facts: PromptFacts) -> dict[str, Any]:
    """Return a valid event without a URL, which no citation supports.

    It falls on the day after today, which is inside every window of one day or more.
    """
    day = facts.today + timedelta(days=1)
    return {
        "name": "Sample: Unconfirmed Pop-up Market (sample data, no source)",
        "date": day.isoformat(),
        "end_date": None,
        "start_time": None,
        "end_time": None,
        "venue": None,
        "address": None,
        "city": None,
        "state": None,
        "url": None,
        "description": f"An event that no search result supports. {SAMPLE_NOTE}",
        "category": "market",
        "is_sample_data": True,
    }


def _search_calls(facts: PromptFacts) -> list[dict[str, Any]]:
    """Return one or two `web_search_call` items, the same number for the same prompt facts."""
    seed = f"{facts.location}|{facts.today.isoformat()}"
    count = 1 + hashlib.sha256(seed.encode()).digest()[0] % 2
    place = facts.location or "nearby"
    queries = [f"local events {place}", f"festivals {place}"]
    return [
        {
            "type": "web_search_call",
            "id": f"ws_sample{uuid.uuid4().hex[:24]}",
            "status": "completed",
            "action": {"type": "search", "query": queries[index]},
        }
        for index in range(count)
    ]
