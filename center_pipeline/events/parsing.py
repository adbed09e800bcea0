"""Turn the text of an LLM answer into validated events inside the discovery window."""

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydantic import ValidationError

from center_pipeline.events.dates import parse_event_date
from center_pipeline.events.models import Event

logger = logging.getLogger(__name__)

_FENCED_BLOCK_RE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\r?\n?(.*?)```", re.DOTALL)

# Keys under which models wrap the events list, tried in this order before any other key.
_LIST_KEYS = ("events", "data", "results", "items", "upcoming_events", "event_list", "list")
# Wrappers nest at most this deep, as in {"data": {"events": [...]}}.
_MAX_WRAPPER_DEPTH = 3
# Scanning stops after this many JSON start characters, so a long answer full of braces
# costs bounded time.
_MAX_SCAN_STARTS = 2000

# Max events kept from one LLM response. The rest are dropped and counted, because a real
# area has far fewer events in a month and more means a runaway response.
MAX_EVENTS_PER_ANSWER = 200

# Other names models use for Event fields. Each applies only when the Event name is absent.
_FIELD_ALIASES = {
    "name": ("title", "event_name", "event", "event_title"),
    "date": ("start_date", "event_date", "date_start", "start", "when"),
    "end_date": ("date_end", "end"),
    "start_time": ("time", "starts_at", "start_at"),
    "venue": ("venue_name", "location_name", "place"),
    "url": ("link", "website", "event_url", "source_url", "source"),
    "description": ("summary", "details"),
    "category": ("type", "event_type", "categories"),
}


class AnswerParseError(ValueError):
    """Raised when an LLM answer contains no JSON events list."""


@dataclass(frozen=True)
class ParsedEvents:
    """Events kept from one answer, with counts of what was dropped and why."""

    events: tuple[Event, ...]
    dropped_out_of_window: int
    dropped_invalid: int
    duplicates_removed: int
    dropped_over_limit: int = 0

    @property
    def dropped(self) -> int:
        """Events dropped as out of window, invalid or over the limit. Duplicates are not counted."""
        return self.dropped_out_of_window + self.dropped_invalid + self.dropped_over_limit


def parse_events_answer(content: str, run_date: date, window_days: int) -> ParsedEvents:
    """Extract, validate, window-filter and deduplicate the events in an LLM answer.

    The JSON may be the whole answer, sit in a fenced code block, or sit in prose. It may
    be an object with an events list (also under "data", "results" and similar keys), a
    bare array, or a single event object. An event is kept when its date is within
    [run_date, run_date + window_days], or when it started earlier and its end date is on
    or after run_date. Of events with the same name (ignoring case and spacing) and the
    same date, the first is kept. At most MAX_EVENTS_PER_ANSWER events are kept.

    Raises:
        AnswerParseError: The answer contains no JSON events list.
        ValueError: window_days is negative.
    """
    if window_days < 0:
        raise ValueError(f"window_days must be 0 or more, got {window_days}")
    raw_events = find_raw_events(content)
    window_end = run_date + timedelta(days=window_days)

    valid: list[Event] = []
    dropped_invalid = 0
    for raw_event in raw_events:
        event = _validate_event(raw_event, run_date)
        if event is None:
            dropped_invalid += 1
        else:
            valid.append(event)

    in_window = [event for event in valid if _overlaps_window(event, run_date, window_end)]
    dropped_out_of_window = len(valid) - len(in_window)

    kept: list[Event] = []
    seen: set[tuple[str, date]] = set()
    for event in in_window:
        key = (_normalize_name(event.name), event.date)
        if key not in seen:
            seen.add(key)
            kept.append(event)

    over_limit = max(0, len(kept) - MAX_EVENTS_PER_ANSWER)
    if over_limit:
        logger.warning(
            "Kept the first %d of %d events of one LLM response and dropped the other %d",
            MAX_EVENTS_PER_ANSWER,
            len(kept),
            over_limit,
        )
    return ParsedEvents(
        events=tuple(kept[:MAX_EVENTS_PER_ANSWER]),
        dropped_out_of_window=dropped_out_of_window,
        dropped_invalid=dropped_invalid,
        duplicates_removed=len(in_window) - len(kept),
        dropped_over_limit=over_limit,
    )


def find_raw_events(content: str) -> list[Any]:
    """Find the events list in an answer and return its items unvalidated.

    Raises:
        AnswerParseError: The answer contains no JSON events list.
    """
    if not content or not content.strip():
        raise AnswerParseError("the answer is empty, so it contains no JSON events list")

    candidates = [content] + [match[1] for match in _FENCED_BLOCK_RE.finditer(content)]
    for text in candidates:
        events = _events_in_text(text)
        if events is not None:
            return events

    snippet = " ".join(content.split())[:80]
    raise AnswerParseError(
        f"no JSON events list found in the answer ({len(content)} characters, "
        f"starting {snippet!r})"
    )


def _events_in_text(text: str) -> list[Any] | None:
    """Return the events list of the first JSON value in `text` that contains one."""
    stripped = text.strip()
    try:
        whole = json.loads(stripped)
    except ValueError:
        pass
    else:
        # A JSON string that itself contains JSON, as some gateways double-encode answers.
        if isinstance(whole, str):
            return _events_in_text(whole) if whole.strip() != stripped else None
        events = _events_in_value(whole, allow_single=True)
        if events is not None:
            return events

    first_start = True
    for value in _scan_json_values(text):
        # A lone event object counts only as the first JSON in the text. Inside an answer
        # cut off mid-list, the first complete object is one event of a broken list.
        events = _events_in_value(value, allow_single=first_start)
        if events is not None:
            return events
        first_start = False
    return None


def _scan_json_values(text: str) -> Iterator[Any]:
    """Yield each JSON object or array in `text`, skipping start characters that do not parse.

    After a value parses, the scan goes on after its end, so the objects nested inside it
    are not yielded again. A start character that does not parse is yielded as None.
    """
    decoder = json.JSONDecoder()
    position = 0
    starts = 0
    while starts < _MAX_SCAN_STARTS:
        brace = text.find("{", position)
        bracket = text.find("[", position)
        found = [index for index in (brace, bracket) if index >= 0]
        if not found:
            return
        start = min(found)
        starts += 1
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            yield None
            position = start + 1
            continue
        yield value
        position = end


def _events_in_value(value: Any, *, allow_single: bool, depth: int = 0) -> list[Any] | None:
    if isinstance(value, list):
        return value if _looks_like_event_list(value) else None
    if not isinstance(value, dict) or depth > _MAX_WRAPPER_DEPTH:
        return None

    lowered = {str(key).casefold(): item for key, item in value.items()}
    for key in _LIST_KEYS:
        if key not in lowered:
            continue
        item = lowered[key]
        # {"events": null} and {"events": {...one event...}} are answers too.
        if item is None:
            return []
        if isinstance(item, dict) and _looks_like_event(item):
            return [item]
        nested = _events_in_value(item, allow_single=False, depth=depth + 1)
        if nested is not None:
            return nested

    for item in value.values():
        if isinstance(item, list) and item and all(_looks_like_event(entry) for entry in item):
            return item
        if isinstance(item, dict):
            nested = _events_in_value(item, allow_single=False, depth=depth + 1)
            if nested is not None:
                return nested

    if allow_single and _looks_like_event(value):
        return [value]
    return None


def _looks_like_event_list(items: list[Any]) -> bool:
    """Accept an empty list or one with at least one object, but not e.g. a citation [1]."""
    return not items or any(isinstance(item, dict) for item in items)


def _looks_like_event(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    keys = {str(key).casefold() for key in item}
    has_name = bool(keys & {"name", *_FIELD_ALIASES["name"]})
    has_date = bool(keys & {"date", *_FIELD_ALIASES["date"]})
    return has_name and has_date


def _validate_event(raw_event: Any, run_date: date) -> Event | None:
    """Validate one raw event into an Event, or return None (logged at DEBUG) if invalid."""
    if not isinstance(raw_event, dict):
        logger.debug("Dropped an event that is not a JSON object: %.200r", raw_event)
        return None
    fields = _canonical_fields(raw_event)

    start, range_end, time_in_date = _parse_date_field(fields.get("date"), run_date)
    if start is None:
        name, date_text = fields.get("name"), fields.get("date")
        logger.debug("Dropped event %.80r: no readable date in %.80r", name, date_text)
        return None
    fields["date"] = start

    end, _, end_time_in_date = _parse_date_field(fields.get("end_date"), start)
    fields["end_date"] = end or range_end
    if not fields.get("start_time") and time_in_date:
        fields["start_time"] = time_in_date
    if not fields.get("end_time") and end_time_in_date:
        fields["end_time"] = end_time_in_date

    try:
        return Event.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        logger.debug("Dropped invalid event %.80r: %s", fields.get("name"), problems)
        return None


def _canonical_fields(raw_event: dict[Any, Any]) -> dict[str, Any]:
    """Lowercase the keys, map aliases to Event field names and flatten a location object."""
    fields = {str(key).strip().casefold(): value for key, value in raw_event.items()}
    for field_name, aliases in _FIELD_ALIASES.items():
        if fields.get(field_name) in (None, ""):
            for alias in aliases:
                if fields.get(alias) not in (None, ""):
                    fields[field_name] = fields[alias]
                    break

    # {"location": {"venue": ..., "address": ..., "city": ...}} or "location": "Zilker Park".
    location = fields.get("location")
    if isinstance(location, dict):
        nested = {str(key).casefold(): value for key, value in location.items()}
        nested.setdefault("venue", nested.get("name"))
        for key in ("venue", "address", "city", "state"):
            if fields.get(key) in (None, "") and nested.get(key) not in (None, ""):
                fields[key] = nested[key]
    elif isinstance(location, str) and fields.get("venue") in (None, ""):
        fields["venue"] = location
    return fields


def _parse_date_field(
    value: Any, reference: date
) -> tuple[date | None, date | None, str | None]:
    if isinstance(value, date):
        return value, None, None
    if not isinstance(value, str):
        return None, None, None
    return parse_event_date(value, reference)


def _overlaps_window(event: Event, window_start: date, window_end: date) -> bool:
    if event.date > window_end:
        return False
    if event.date >= window_start:
        return True
    return event.end_date is not None and event.end_date >= window_start


def _normalize_name(name: str) -> str:
    return " ".join(name.casefold().split())
