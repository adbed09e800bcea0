"""Sample OpenAI-compatible chat-completions server that returns sample events.

Routes:
    POST /v1/chat/completions: a `chat.completion` body whose message content is the JSON
        object `{"events": [...]}`.
    POST /v1/responses: the Responses API with a sample web search tool, which
        `responses_api.py` describes.
    GET /v1/models and GET /v1/models/{model}: the model list in OpenAI's shape.
    GET /health: liveness check.

In the default mode the events are made up from the prompt's `Today's date:`, `Location:`
and `Window: N days` lines, and the same prompt always gives the same events. Each event
is named "Sample: ... (sample data)" and its description states that it is not a real event.

In scripted mode the server replays a list of `{"status", "headers", "body"}` responses in
order, whatever the request, and repeats the last one when the list is used up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from center_pipeline.sample_servers.faults import (
    Fault,
    FaultPlan,
    FaultType,
    RequestCounter,
    RequestKind,
    cut_json,
    decide_fault,
    stall_seconds,
    retry_after_headers,
    status_phrase,
)

logger = logging.getLogger(__name__)

SAMPLE_MODEL = "sample-events-1"
DEFAULT_WINDOW_DAYS = 30
MAX_WINDOW_DAYS = 366
SAMPLE_NOTE = "Sample data from the center_pipeline sample LLM server, not a real event."

_DATE_LINE = re.compile(r"^\s*Today['\u2019]s date:\s*(\d{4}-\d{2}-\d{2})\b", re.MULTILINE)
_LOCATION_LINE = re.compile(r"^\s*Location:[ \t]*(.+?)\s*$", re.MULTILINE)
_WINDOW_LINE = re.compile(r"^\s*Window:\s*(\d+)\s*days?\b", re.MULTILINE | re.IGNORECASE)
# "City, ST" at the start of the location, whatever follows it.
_CITY_STATE_CODE = re.compile(r"^\s*(?P<city>[^,]+?)\s*,\s*(?P<state>[A-Z]{2})\b")
# "City, State Name" with an optional ZIP code and nothing after it.
_CITY_STATE_NAME = re.compile(
    r"^\s*(?P<city>[^,]+?)\s*,\s*(?P<state>[A-Za-z][A-Za-z .]*?)\s*(\d{5}(-\d{4})?)?\s*$"
)


@dataclass(frozen=True)
class _EventTemplate:
    title: str
    category: str
    venue: str
    start_time: str
    end_time: str
    description: str
    days: int = 1


_SEASON_TEMPLATES: dict[str, tuple[_EventTemplate, ...]] = {
    "winter": (
        _EventTemplate("Winter Craft Fair", "market", "Community Hall", "10:00", "16:00",
                       "Local makers sell handmade gifts."),
        _EventTemplate("Holiday Lights Walk", "festival", "City Park", "17:30", "20:00",
                       "An evening walk past light displays.", days=2),
        _EventTemplate("Family Science Saturday", "education", "Public Library", "09:00",
                       "12:00", "Hands-on experiments for kids 6-12."),
        _EventTemplate("Indoor Farmers Market", "market", "Civic Center", "08:00", "13:00",
                       "Winter produce, baked goods and coffee."),
        _EventTemplate("Ice Skating Social", "recreation", "Ice Rink", "18:00", "20:00",
                       "Open skate with rentals for all ages."),
    ),
    "spring": (
        _EventTemplate("Spring Garden Festival", "festival", "Botanical Garden", "10:00",
                       "17:00", "Plant sales, garden talks and kids' crafts.", days=2),
        _EventTemplate("Kite Day in the Park", "recreation", "City Park", "11:00", "15:00",
                       "Bring a kite or build one on site."),
        _EventTemplate("Young Authors Reading", "education", "Public Library", "14:00",
                       "15:30", "Students read their own stories."),
        _EventTemplate("Neighborhood Cleanup", "community", "Community Hall", "09:00",
                       "12:00", "Volunteers tidy parks and streets."),
        _EventTemplate("Robotics Showcase", "education", "Science Museum", "13:00", "17:00",
                       "Student teams demonstrate their robots."),
    ),
    "summer": (
        _EventTemplate("Summer Concert in the Park", "music", "Park Bandshell", "18:30",
                       "20:30", "Free outdoor concert. Bring a blanket."),
        _EventTemplate("Outdoor Movie Night", "film", "City Park", "20:00", "22:00",
                       "A family film on a big screen."),
        _EventTemplate("Splash Pad Party", "recreation", "Recreation Center", "11:00",
                       "14:00", "Water games and snacks for kids."),
        _EventTemplate("Farmers Market", "market", "Main Street Plaza", "08:00", "12:00",
                       "Local produce, honey and flowers."),
        _EventTemplate("Summer Reading Kickoff", "education", "Public Library", "10:00",
                       "12:00", "Sign up for the reading challenge.", days=2),
    ),
    "fall": (
        _EventTemplate("Harvest Festival", "festival", "Fairgrounds", "10:00", "18:00",
                       "Hayrides, pumpkins and local food.", days=2),
        _EventTemplate("Fall Book Sale", "market", "Public Library", "09:00", "17:00",
                       "Used books for all ages."),
        _EventTemplate("Family STEM Night", "education", "Science Museum", "17:00", "20:00",
                       "Hands-on science stations for families."),
        _EventTemplate("Trick-or-Treat Street", "community", "Main Street Plaza", "16:00",
                       "19:00", "Costumed kids visit local shops."),
        _EventTemplate("Autumn Art Walk", "arts", "Arts District", "17:00", "21:00",
                       "Galleries open late with local artists."),
    ),
}

_SEASON_BY_MONTH = {
    12: "winter", 1: "winter", 2: "winter",
    3: "spring", 4: "spring", 5: "spring",
    6: "summer", 7: "summer", 8: "summer",
    9: "fall", 10: "fall", 11: "fall",
}


@dataclass(frozen=True)
class PromptFacts:
    """Facts that the sample server reads from a prompt.

    Attributes:
        today: Date from the `Today's date:` line, or the current UTC date if it is missing.
        location: Text of the `Location:` line, unquoted if it was JSON-quoted, or "".
        window_days: Days from the `Window: N days` line, or 30.
    """

    today: date
    location: str
    window_days: int


def create_llm_app(
    faults: FaultPlan,
    *,
    scripted: list[dict[str, Any]] | None = None,
    api_key: str | None = None,
    counter: RequestCounter | None = None,
) -> FastAPI:
    """Build the sample chat-completions server.

    Args:
        faults: Faults to inject, read from `faults.llm`. In scripted mode only
            `latency_ms` applies. Replace `app.state.faults` to change them while serving.
        scripted: Responses `{"status": int, "headers": dict, "body": ...}` to replay in
            order. A body that is a string is sent as is, so it may be invalid JSON.
        api_key: When set, requests without `Authorization: Bearer <api_key>` get 401.
            When None, any key is accepted.
        counter: Counter to increment, or None to make a new one.

    Returns:
        The app. `app.state` contains `faults` and `counter`.

    Raises:
        ValueError: If `scripted` is empty or an entry is invalid.
    """
    script = [_validate_script_entry(i, entry) for i, entry in enumerate(scripted or [])]
    if scripted is not None and not script:
        raise ValueError("scripted must contain at least one response")

    app = FastAPI(title="Sample LLM API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = faults
    app.state.counter = counter if counter is not None else RequestCounter()
    app.state.script_position = 0
    started_at = int(time.time())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "mode": "scripted" if script else "sample"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_object(SAMPLE_MODEL, started_at)]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> Response:
        if model_id != SAMPLE_MODEL:
            logger.info("Model %r not found", model_id)
            message = f"The model '{model_id}' does not exist or you do not have access to it."
            return _openai_error(404, message, "invalid_request_error", code="model_not_found")
        return JSONResponse(_model_object(SAMPLE_MODEL, started_at))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        facts = read_prompt_facts(payload.get("messages") if isinstance(payload, dict) else None)
        plan: FaultPlan = app.state.faults
        attempt, script_position = await start_llm_request(app, facts.location)

        early = scripted_or_unauthorized(request, script, script_position, api_key, facts)
        if early is not None:
            return early
        problem = _find_request_problem(payload)
        if problem is not None:
            logger.info("Rejected invalid LLM request: %s", problem)
            return _openai_error(400, problem, "invalid_request_error")

        fault = decide_fault(plan, RequestKind.LLM, facts.location, attempt)
        truncate = fault is not None and fault.type is FaultType.TRUNCATED
        body = build_completion(payload, facts, truncate=truncate)
        if fault is not None:
            logger.debug("Injecting %s into LLM request %r #%d", fault, facts.location, attempt)
        if fault is not None and not truncate:
            return _fault_response(fault, body)
        return JSONResponse(body, headers={"x-request-id": f"req_{uuid.uuid4().hex}"})

    # Imported here because responses_api imports this module's helpers.
    from center_pipeline.sample_servers.responses_api import add_responses_route

    add_responses_route(app, script, api_key)
    return app


def read_prompt_facts(messages: Any) -> PromptFacts:
    """Read today's date, the location and the window from chat messages.

    User messages are searched first, then all messages. Missing lines get defaults.
    """
    texts = _message_texts(messages)
    user_text = "\n".join(text for role, text in texts if role == "user")
    all_text = "\n".join(text for _, text in texts)

    def search(pattern: re.Pattern[str]) -> str | None:
        match = pattern.search(user_text) or pattern.search(all_text)
        return match.group(1) if match else None

    today = datetime.now(UTC).date()
    date_text = search(_DATE_LINE)
    if date_text is not None:
        try:
            today = date.fromisoformat(date_text)
        except ValueError:
            logger.warning("Invalid prompt date %r, so using today's UTC date", date_text)

    location = search(_LOCATION_LINE) or ""
    if location.startswith('"'):
        try:
            decoded = json.loads(location)
        except ValueError:
            decoded = None
        location = decoded if isinstance(decoded, str) else location.strip('"')

    window_text = search(_WINDOW_LINE)
    window_days = int(window_text) if window_text else DEFAULT_WINDOW_DAYS
    window_days = min(max(window_days, 1), MAX_WINDOW_DAYS)
    return PromptFacts(today=today, location=location.strip(), window_days=window_days)


def make_sample_events(facts: PromptFacts) -> list[dict[str, Any]]:
    """Make 2 to 4 sample events near the location, all inside the window.

    Event dates fall 1 to N-1 days after today for a window of N days, which is inside the
    window whether its end is counted as inclusive or not. A 1-day window puts every event
    on today's date.
    """
    seed_text = f"{facts.location}|{facts.today.isoformat()}|{facts.window_days}"
    rng = random.Random(hashlib.sha256(seed_text.encode()).digest())
    city, state = _split_city_state(facts.location)

    season = _SEASON_BY_MONTH[facts.today.month]
    templates = rng.sample(_SEASON_TEMPLATES[season], rng.randint(2, 4))
    last_offset = max(facts.window_days - 1, 0)
    first_offset = min(1, last_offset)
    offsets = sorted(rng.randint(first_offset, last_offset) for _ in templates)

    events = []
    for template, offset in zip(templates, offsets, strict=True):
        start = facts.today + timedelta(days=offset)
        end_offset = min(offset + template.days - 1, last_offset)
        end = facts.today + timedelta(days=end_offset) if end_offset > offset else None
        events.append(
            {
                "name": f"Sample: {template.title} (sample data)",
                "date": start.isoformat(),
                "end_date": end.isoformat() if end else None,
                "start_time": template.start_time,
                "end_time": template.end_time,
                "venue": f"{city} {template.venue}" if city else template.venue,
                "address": None,
                "city": city,
                "state": state,
                "url": _event_url(city, start, template.title),
                "description": f"{template.description} {SAMPLE_NOTE}",
                "category": template.category,
                "is_sample_data": True,
            }
        )
    return events


def build_completion(
    payload: dict[str, Any], facts: PromptFacts, *, truncate: bool = False
) -> dict[str, Any]:
    """Build a `chat.completion` body with the sample events as its message content.

    The content is cut short with finish_reason "length" when `truncate` is true or when
    it would exceed the request's `max_completion_tokens` or `max_tokens`.
    """
    content = json.dumps({"events": make_sample_events(facts)}, ensure_ascii=False)
    completion_tokens = _estimate_tokens(content)
    finish_reason = "stop"

    token_limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if isinstance(token_limit, int) and 0 < token_limit < completion_tokens:
        content = content[: token_limit * 4]
        completion_tokens = token_limit
        finish_reason = "length"
    if truncate:
        content = content[: len(content) // 2]
        completion_tokens = _estimate_tokens(content)
        finish_reason = "length"

    message_texts = _message_texts(payload["messages"])
    prompt_tokens = sum(_estimate_tokens(text) + 4 for _, text in message_texts)
    return {
        "id": f"chatcmpl-sample{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_sample",
    }


def _estimate_tokens(text: str) -> int:
    """Estimate tokens as one per 4 characters, the usual rule of thumb for English text."""
    return max(1, math.ceil(len(text) / 4))


def _message_texts(messages: Any) -> list[tuple[str, str]]:
    """Return (role, text) for each message, joining the text parts of list contents."""
    if not isinstance(messages, list):
        return []
    texts = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            parts = [part.get("text", "") for part in content if isinstance(part, dict)]
            content = "\n".join(part for part in parts if isinstance(part, str))
        if isinstance(content, str):
            texts.append((str(message.get("role", "")), content))
    return texts


def _find_request_problem(payload: Any) -> str | None:
    """Return why a chat-completions request is invalid, or None if it is valid."""
    if not isinstance(payload, dict):
        return "The request body must be a JSON object."
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return "Missing required parameter: 'model'."
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return "Missing required parameter: 'messages'."
    if payload.get("stream"):
        return "The sample server does not support stream=true. Send the request without it."
    return None


def _split_city_state(location: str) -> tuple[str | None, str | None]:
    """Split "Austin, TX 78701" into ("Austin", "TX"), and other text into (text, None)."""
    match = _CITY_STATE_CODE.match(location) or _CITY_STATE_NAME.match(location)
    if match:
        return match.group("city"), match.group("state")
    return (location or None), None


def _event_url(city: str | None, day: date, title: str) -> str:
    def url_slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    city_part = url_slug(city) if city else "anywhere"
    return f"https://events.example.org/{city_part}/{day.isoformat()}/{url_slug(title)}"


def _model_object(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "center-pipeline"}


def _openai_error(
    status: int,
    message: str,
    error_type: str,
    *,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _fault_response(fault: Fault, normal_body: dict[str, Any]) -> Response:
    """Return the response for an injected fault, with bodies shaped like OpenAI's."""
    if fault.type is FaultType.MALFORMED:
        return Response(cut_json(normal_body), status_code=200, media_type="application/json")

    headers = retry_after_headers(fault.retry_after_seconds)
    if fault.status == 429:
        message = (
            "Rate limit reached for requests per min (RPM): fault injected by the sample server."
        )
        return _openai_error(429, message, "requests", code="rate_limit_exceeded", headers=headers)
    if fault.status == 401:
        return _openai_error(
            401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"
        )
    if fault.status == 503:
        message = "That model is currently overloaded with other requests."
        return _openai_error(503, message, "server_error", headers=headers)
    if fault.status >= 500:
        message = "The server had an error processing your request."
        return _openai_error(fault.status, message, "server_error", headers=headers)
    message = f"{status_phrase(fault.status)} (fault injected by the sample server)."
    return _openai_error(fault.status, message, "invalid_request_error", headers=headers)


def _validate_script_entry(position: int, entry: Any) -> dict[str, Any]:
    """Check one scripted response and fill in the defaults (status 200, no headers)."""
    if not isinstance(entry, dict) or "body" not in entry:
        raise ValueError(f"Scripted response {position} must be a dict with a 'body': {entry!r}")
    status = entry.get("status", 200)
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"Scripted response {position} has an invalid status: {status!r}")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError(f"Scripted response {position} has headers that are not a dict")
    lowercase_headers = {str(name).lower(): str(value) for name, value in headers.items()}
    return {"status": status, "headers": lowercase_headers, "body": entry["body"]}


def _scripted_response(entry: dict[str, Any]) -> Response:
    body = entry["body"]
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **entry["headers"]}
    return Response(content, status_code=entry["status"], headers=headers)


async def start_llm_request(app: FastAPI, location: str) -> tuple[int, int]:
    """Count one LLM request, take its place in the script, and wait out latency and stalls.

    Returns:
        The request's attempt number for its location, and its script position.
    """
    attempt = app.state.counter.increment(RequestKind.LLM, location)
    # Take the script position on arrival, so requests replay the script in arrival order.
    script_position = app.state.script_position
    app.state.script_position += 1
    plan: FaultPlan = app.state.faults
    if plan.latency_ms > 0:
        await asyncio.sleep(plan.latency_ms / 1000)
    await asyncio.sleep(stall_seconds(plan, RequestKind.LLM, attempt))
    return attempt, script_position


def scripted_or_unauthorized(
    request: Request,
    script: list[dict[str, Any]],
    script_position: int,
    api_key: str | None,
    facts: PromptFacts,
) -> Response | None:
    """Return the scripted response, or a 401 for a wrong key, or None to answer normally."""
    if script:
        return _scripted_response(script[min(script_position, len(script) - 1)])
    if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
        logger.info("Rejected %s for %r: incorrect API key", request.url.path, facts.location)
        return _openai_error(
            401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"
        )
    return None
