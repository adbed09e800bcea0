"""Web-search-grounded event lookups through the Responses API, and their citations.

`GroundedEventsClient` sends each prompt through `client.responses.create` with the
`web_search` tool, a tool name that OpenAI and xAI share. It never sends xAI's older
`search_parameters` live search, which xAI now rejects with HTTP 410.
`events_from_grounded_answer` parses the response text like a chat answer, then keeps only
the events that a citation of the provider supports and sets their `source_url`.
"""

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from center_pipeline.events.llm_client import (
    ErrorDetails,
    LlmAnswerError,
    LlmError,
    LlmRequestError,
    OpenAiApiClient,
)
from center_pipeline.events.models import Event, http_url_or_none
from center_pipeline.events.parsing import AnswerParseError, parse_events_answer
from center_pipeline.events.pricing import CallUsage

logger = logging.getLogger(__name__)

WEB_SEARCH_ENV_VAR = "LLM_WEB_SEARCH"
WEB_SEARCH_TOOL = {"type": "web_search"}

# A citation title matches an event by name only when the name has at least this many
# characters, so that short names such as "Market" do not match any page about markets.
MIN_TITLE_MATCH_CHARS = 8
# Scanning the response text for JSON objects stops after this many "{" characters.
_MAX_SCAN_STARTS = 2000
_MAX_REFUSAL_CHARS = 200


@dataclass(frozen=True)
class Citation:
    """A page the provider cited: a `url_citation` annotation, or a URL of xAI's `citations`.

    Attributes:
        url: The cited URL, as the provider gave it.
        title: The page title, or None when the provider gave none.
        start_index: First character of the cited span in the response text, or None.
        end_index: Character after the cited span, or None.
    """

    url: str
    title: str | None = None
    start_index: int | None = None
    end_index: int | None = None


@dataclass(frozen=True)
class GroundedAnswer:
    """The text and citations of a Responses API response, with its usage and status."""

    text: str
    citations: tuple[Citation, ...]
    status: str | None
    incomplete_reason: str | None
    refusal: str | None
    model: str
    usage: CallUsage
    attempts: int


@dataclass(frozen=True)
class SourcedEvents:
    """Events kept from a grounded answer, each with a `source_url`, and what was dropped."""

    events: tuple[Event, ...]
    dropped_out_of_window: int
    dropped_invalid: int
    dropped_unsourced: int
    duplicates_removed: int
    dropped_over_limit: int = 0

    @property
    def dropped(self) -> int:
        """Events dropped as out of window, invalid, unsourced or over the limit.

        Duplicates are not counted.
        """
        return (
            self.dropped_out_of_window
            + self.dropped_invalid
            + self.dropped_unsourced
            + self.dropped_over_limit
        )


class GroundedEventsClient(OpenAiApiClient):
    """Client for one model on one Responses API, with web search. Safe to share between threads."""

    def search(self, prompt: str, system_prompt: str) -> GroundedAnswer:
        """Send one Responses API request with the web search tool, retrying transient failures.

        Raises:
            LlmRequestError: The server has no Responses API (HTTP 404 or 405) or rejects the
                web search tool. The message names LLM_WEB_SEARCH=false as a fix.
            LlmError: As `OpenAiApiClient._send_with_retries` describes, or when the API
                reports the response as failed.
        """
        request = {
            "model": self._model,
            "input": [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": prompt},
            ],
            "tools": [WEB_SEARCH_TOOL],
            "max_output_tokens": self._max_output_tokens,
        }
        response, attempts = self._send_with_retries(
            lambda: self._client.responses.create(**request)
        )
        answer = self._answer_from_response(response, attempts)
        logger.debug(
            "Response from model %s after %d attempts: status=%s, %d citations, "
            "%d tool calls, %d input and %d output tokens",
            answer.model,
            attempts,
            answer.status,
            len(answer.citations),
            answer.usage.tool_calls,
            answer.usage.input_tokens,
            answer.usage.output_tokens,
        )
        return answer

    def _raise_for_endpoint(self, status_code: int, details: ErrorDetails) -> None:
        described = self._redact(details.describe(status_code))
        # OpenAI answers an unknown model with 404 model_not_found, which the generic
        # mapping reports. Any other 404, and every 405, means the route is missing.
        if status_code == 405 or (status_code == 404 and not details.mentions("model")):
            raise LlmRequestError(
                f"LLM server at {self._client.base_url} has no Responses API ({described}), "
                f"so it cannot search the web. Set {WEB_SEARCH_ENV_VAR}=false to use chat "
                "completions without web search.",
                status_code=status_code,
            )
        if status_code in (400, 422) and details.mentions("web_search", "tools"):
            raise LlmRequestError(
                f"LLM API rejected the web search tool for model {self._model!r} "
                f"({described}). Choose a model that supports web search, or set "
                f"{WEB_SEARCH_ENV_VAR}=false to use chat completions without it.",
                status_code=status_code,
            )

    def _answer_from_response(self, response: Any, attempts: int) -> GroundedAnswer:
        status = _field(response, "status")
        error = _field(response, "error")
        output = _field(response, "output") or []
        if status == "failed" or (error and not output):
            raise LlmError(f"LLM API reported the response as failed: {self._redact(str(error))}")

        texts: list[str] = []
        citations: list[Citation] = []
        refusals: list[str] = []
        search_calls = 0
        offset = 0
        for item in output:
            item_type = _field(item, "type")
            if item_type == "web_search_call":
                search_calls += 1
            if item_type != "message":
                continue
            for part in _field(item, "content") or []:
                part_type = _field(part, "type")
                if part_type == "refusal":
                    refusals.append(str(_field(part, "refusal") or ""))
                if part_type != "output_text":
                    continue
                text = _field(part, "text") or ""
                citations.extend(_url_citations(_field(part, "annotations") or [], offset))
                texts.append(text)
                offset += len(text)
        # xAI also lists every URL its search visited in `citations`, without spans.
        for url in _field(response, "citations") or []:
            if isinstance(url, str):
                citations.append(Citation(url=url))

        usage = _field(response, "usage")
        incomplete = _field(response, "incomplete_details")
        refusal = " ".join(" ".join(refusals).split())
        return GroundedAnswer(
            text="".join(texts),
            citations=tuple(citations),
            status=status,
            incomplete_reason=_field(incomplete, "reason"),
            refusal=refusal or None,
            model=_field(response, "model") or self._model,
            usage=CallUsage(
                input_tokens=_count(_field(usage, "input_tokens")),
                output_tokens=_count(_field(usage, "output_tokens")),
                tool_calls=_tool_calls(response, search_calls),
            ),
            attempts=attempts,
        )


def events_from_grounded_answer(
    answer: GroundedAnswer, run_date: date, window_days: int
) -> SourcedEvents:
    """Parse the events of a grounded answer and keep those that a citation supports.

    Raises:
        LlmAnswerError: The model refused, the answer is incomplete (e.g. truncated at the
            token limit), empty, or contains no JSON events list. The error carries the
            answer's usage.
    """
    usage = answer.usage
    if answer.refusal:
        refusal = answer.refusal[:_MAX_REFUSAL_CHARS]
        raise LlmAnswerError(
            f"LLM model {answer.model} refused to answer: {refusal!r}", usage=usage
        )
    if answer.incomplete_reason == "max_output_tokens":
        raise LlmAnswerError(
            f"LLM answer was truncated at the output token limit after {usage.output_tokens} "
            "tokens (4,096 by default). Shorten EVENT_WINDOW_DAYS or the prompt template.",
            usage=usage,
        )
    if answer.incomplete_reason == "content_filter":
        raise LlmAnswerError(
            f"LLM answer from model {answer.model} was blocked by a content filter", usage=usage
        )
    if answer.status == "incomplete":
        raise LlmAnswerError(
            f"LLM answer from model {answer.model} is incomplete "
            f"(reason: {answer.incomplete_reason})",
            usage=usage,
        )
    if not answer.text.strip():
        raise LlmAnswerError(
            f"LLM answer from model {answer.model} has no text (status={answer.status})",
            usage=usage,
        )
    try:
        parsed = parse_events_answer(answer.text, run_date, window_days)
    except AnswerParseError as exc:
        raise LlmAnswerError(f"LLM answer could not be parsed: {exc}", usage=usage) from exc

    matcher = CitationMatcher(answer.text, answer.citations)
    sourced = []
    for event in parsed.events:
        source_url = matcher.source_for(event)
        if source_url is None:
            logger.debug("Dropped event %.80r: no citation supports it", event.name)
        else:
            sourced.append(event.model_copy(update={"source_url": source_url}))
    unsourced = len(parsed.events) - len(sourced)
    if parsed.events and not sourced:
        logger.warning(
            "Dropped all %d events of the response from model %s, because none matches one "
            "of its %d citations",
            len(parsed.events),
            answer.model,
            len(answer.citations),
        )
    return SourcedEvents(
        events=tuple(sourced),
        dropped_out_of_window=parsed.dropped_out_of_window,
        dropped_invalid=parsed.dropped_invalid,
        dropped_unsourced=unsourced,
        duplicates_removed=parsed.duplicates_removed,
        dropped_over_limit=parsed.dropped_over_limit,
    )


class CitationMatcher:
    """Finds the cited page of each event of one answer.

    An event's source is the first of these that exists:
    1. its own `url`, when a citation has the same URL, compared without scheme, fragment,
       trailing slash and utm_* parameters, with the host in lowercase;
    2. else the citation that comes first in the text among those whose span overlaps the
       event's JSON object in the answer text;
    3. else the first citation whose title contains the event's name, compared in
       casefolded words, for names of MIN_TITLE_MATCH_CHARS characters or more.
    Citations whose URL is not an absolute http(s) URL are ignored. The source is the URL
    as the provider cited it. An event that none of the rules matches has no source.
    """

    def __init__(self, text: str, citations: Sequence[Citation]) -> None:
        self._citations = [
            citation for citation in citations if http_url_or_none(citation.url) is not None
        ]
        self._by_url: dict[str, str] = {}
        for citation in self._citations:
            self._by_url.setdefault(comparable_url(citation.url), citation.url.strip())
        self._spans = [
            citation for citation in self._citations if citation.start_index is not None
        ]
        self._spans.sort(key=lambda citation: citation.start_index or 0)
        self._objects = list(_json_objects(text))
        self._used_objects: set[int] = set()

    def source_for(self, event: Event) -> str | None:
        """Return the cited URL that supports `event`, or None. Call it in event order."""
        if event.url is not None:
            cited = self._by_url.get(comparable_url(event.url))
            if cited is not None:
                return cited

        span = self._object_span(event.name)
        if span is not None:
            start, end = span
            for citation in self._spans:
                if _overlaps(citation, start, end):
                    return citation.url.strip()

        name = _words(event.name)
        if len(name) >= MIN_TITLE_MATCH_CHARS:
            for citation in self._citations:
                if citation.title and name in _words(citation.title):
                    return citation.url.strip()
        return None

    def _object_span(self, name: str) -> tuple[int, int] | None:
        """Return the span of the first unused JSON object that has `name` as a value."""
        expected_name = _words(name)
        for index, (start, end, value) in enumerate(self._objects):
            if index in self._used_objects:
                continue
            values = value.values()
            if any(isinstance(item, str) and _words(item) == expected_name for item in values):
                self._used_objects.add(index)
                return start, end
        return None


def comparable_url(url: str) -> str:
    """Return `url` in the form that CitationMatcher compares."""
    parts = urlsplit(url.strip())
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not key.lower().startswith("utm_")
    ]
    return urlunsplit(("", parts.netloc.lower(), parts.path.rstrip("/"), urlencode(query), ""))


def _json_objects(text: str) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield (start, end, object) for each JSON object in `text`, nested ones included."""
    decoder = json.JSONDecoder()
    starts = 0
    for match in re.finditer(r"\{", text):
        starts += 1
        if starts > _MAX_SCAN_STARTS:
            return
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            yield match.start(), end, value


def _overlaps(citation: Citation, start: int, end: int) -> bool:
    citation_start = citation.start_index or 0
    # An empty span marks a point, which counts when it falls inside the object.
    citation_end = max(citation.end_index or citation_start, citation_start + 1)
    return citation_start < end and citation_end > start


def _url_citations(annotations: Sequence[Any], offset: int) -> Iterator[Citation]:
    for annotation in annotations:
        url = _field(annotation, "url")
        if _field(annotation, "type") != "url_citation" or not isinstance(url, str):
            continue
        start = _field(annotation, "start_index")
        end = _field(annotation, "end_index")
        title = _field(annotation, "title")
        yield Citation(
            url=url,
            title=title if isinstance(title, str) else None,
            start_index=start + offset if isinstance(start, int) else None,
            end_index=end + offset if isinstance(end, int) else None,
        )


def _tool_calls(response: Any, search_calls: int) -> int:
    """Return the billable web searches when OpenAI reports them, else the search call items.

    OpenAI's `tool_usage.web_search.num_requests` counts billable searches, which can differ
    from the number of `web_search_call` items.
    """
    billable = _field(_field(_field(response, "tool_usage"), "web_search"), "num_requests")
    return billable if isinstance(billable, int) and billable >= 0 else search_calls


def _field(value: Any, name: str) -> Any:
    """Read a field of an SDK model or of a plain dict, as the SDK keeps unknown items."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(name)
    return getattr(value, name, None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _words(text: str) -> str:
    return " ".join(text.casefold().split())
