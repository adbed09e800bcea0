"""Tests of date and time parsing, answer parsing, window filtering and deduplication."""

import json
from datetime import date
from pathlib import Path

import pytest

from center_pipeline.events.dates import normalize_time, parse_event_date
from center_pipeline.events.llm_client import LlmAnswer, LlmAnswerError, events_from_answer
from center_pipeline.events.models import Event
from center_pipeline.events.parsing import (
    MAX_EVENTS_PER_ANSWER,
    AnswerParseError,
    parse_events_answer,
)

LLM_CASES = json.loads((Path(__file__).parent / "data" / "llm_cases.json").read_text("utf-8"))
RUN_DATE = date.fromisoformat(LLM_CASES["run_date"])
WINDOW_DAYS = LLM_CASES["window_days"]


def _answer_from_body(body: dict) -> LlmAnswer:
    """Build the LlmAnswer that the client returns for a chat completion body."""
    choice = body["choices"][0]
    usage = body.get("usage", {})
    return LlmAnswer(
        content=choice["message"].get("content"),
        finish_reason=choice.get("finish_reason"),
        refusal=choice["message"].get("refusal"),
        model=body.get("model", "fixture-model"),
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        total_tokens=usage.get("total_tokens", 0),
        attempts=1,
    )


def _answered_cases() -> list:
    cases = []
    for case in LLM_CASES["cases"]:
        last = case["responses"][-1]
        if last["status"] == 200:
            cases.append(pytest.param(last["body"], case["expected"], id=case["name"]))
    return cases


def _events_json(*events: dict) -> str:
    return json.dumps({"events": list(events)})


def _parse(content: str, run_date: date = RUN_DATE, window_days: int = WINDOW_DAYS):
    return parse_events_answer(content, run_date, window_days)


@pytest.mark.parametrize(("body", "expected"), _answered_cases())
def test_fixture_answer_body(body: dict, expected: dict) -> None:
    answer = _answer_from_body(body)

    if expected["status"] == "failed":
        with pytest.raises(LlmAnswerError) as error:
            events_from_answer(answer, RUN_DATE, WINDOW_DAYS)
        assert expected["reason_contains"] in str(error.value)
        return

    parsed = events_from_answer(answer, RUN_DATE, WINDOW_DAYS)
    assert len(parsed.events) == expected["events"]
    if "dropped" in expected:
        assert parsed.dropped == expected["dropped"]
    by_name = {event.name: event for event in parsed.events}
    for name, value in expected.get("dates", {}).items():
        assert by_name[name].date.isoformat() == value
    for name, value in expected.get("end_dates", {}).items():
        assert by_name[name].end_date.isoformat() == value
    for name, value in expected.get("start_times", {}).items():
        assert by_name[name].start_time == value


def test_fixture_cases_cover_answers() -> None:
    # Guards the parametrization above against an empty or renamed fixture file.
    assert len(_answered_cases()) >= 10


# --- parse_event_date ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end", "time"),
    [
        ("2026-12-12", "2026-12-12", None, None),
        ("12/12/2026", "2026-12-12", None, None),
        ("12-12-2026", "2026-12-12", None, None),
        ("December 12, 2026", "2026-12-12", None, None),
        ("Dec. 12th, 2026", "2026-12-12", None, None),
        ("12 December 2026", "2026-12-12", None, None),
        ("Saturday, December 12", "2026-12-12", None, None),
        ("Dec 19", "2026-12-19", None, None),
        ("12/19", "2026-12-19", None, None),
        ("Dec 4", "2026-12-04", None, None),
        ("Dec 1", "2027-12-01", None, None),
        ("January 2", "2027-01-02", None, None),
        ("Feb 29", "2028-02-29", None, None),
        ("2026-12-20T19:00:00-06:00", "2026-12-20", None, "19:00"),
        ("2026-12-20T19:30:00Z", "2026-12-20", None, "19:30"),
        ("2026-12-12 19:00", "2026-12-12", None, "19:00"),
        ("2026-12-12T00:00:00", "2026-12-12", None, None),
        ("Dec 12, 2026 at 7:30pm", "2026-12-12", None, "19:30"),
        ("Dec 12 (tentative)", "2026-12-12", None, None),
        ("Dec 12-14", "2026-12-12", "2026-12-14", None),
        ("Dec 12 - 14", "2026-12-12", "2026-12-14", None),
        ("Dec. 12 \u2013 14", "2026-12-12", "2026-12-14", None),
        ("December 26-28, 2026", "2026-12-26", "2026-12-28", None),
        ("12-14 December 2026", "2026-12-12", "2026-12-14", None),
        ("Sat-Sun, Dec 12-13", "2026-12-12", "2026-12-13", None),
        ("2026-12-12 to 2026-12-14", "2026-12-12", "2026-12-14", None),
        ("2026-12-12/2026-12-15", "2026-12-12", "2026-12-15", None),
        ("12/12/2026 - 12/14/2026", "2026-12-12", "2026-12-14", None),
        ("12/12-12/14", "2026-12-12", "2026-12-14", None),
        ("from Dec 12 through Dec 14", "2026-12-12", "2026-12-14", None),
        ("between Dec 12 and Dec 14", "2026-12-12", "2026-12-14", None),
        ("Dec 30 - Jan 2", "2026-12-30", "2027-01-02", None),
        ("Dec 30-Jan 2", "2026-12-30", "2027-01-02", None),
        ("December 30 - January 2, 2027", "2026-12-30", "2027-01-02", None),
        ("December 30, 2026 \u2014 January 2, 2027", "2026-12-30", "2027-01-02", None),
        ("Dec 1-6", "2026-12-01", "2026-12-06", None),
        ("Dec 12 and 19", "2026-12-12", None, None),
        ("Dec 12, 7 PM - 10 PM", "2026-12-12", None, "19:00"),
        ("Dec 12 - 7pm", "2026-12-12", None, "19:00"),
        ("Dec 14 - Dec 12, 2026", "2026-12-14", None, None),
    ],
)
def test_parse_event_date(text: str, start: str, end: str | None, time: str | None) -> None:
    parsed_start, parsed_end, parsed_time = parse_event_date(text, RUN_DATE)

    assert parsed_start == date.fromisoformat(start)
    assert parsed_end == (date.fromisoformat(end) if end else None)
    assert parsed_time == time


@pytest.mark.parametrize(
    "text", ["", "   ", "TBD", "Every Saturday", "December 2026", "2026", "14", "soon", None]
)
def test_parse_event_date_without_full_date(text: str | None) -> None:
    assert parse_event_date(text, RUN_DATE) == (None, None, None)


def test_year_less_range_after_new_year() -> None:
    # On Jan 2 a year-less "Dec 30 - Jan 3" is the range that is still running.
    start, end, _ = parse_event_date("Dec 30 - Jan 3", date(2027, 1, 2))

    assert start == date(2026, 12, 30)
    assert end == date(2027, 1, 3)


# --- normalize_time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7 PM", "19:00"),
        ("7PM", "19:00"),
        ("7 p.m.", "19:00"),
        ("7:30pm", "19:30"),
        ("7.30pm", "19:30"),
        ("10:00 a.m.", "10:00"),
        ("19:00:00", "19:00"),
        ("19:00", "19:00"),
        ("0:30", "00:30"),
        ("12 AM", "00:00"),
        ("12 PM", "12:00"),
        ("noon", "12:00"),
        ("Midnight", "00:00"),
        ("7-10 PM", "19:00"),
        ("11-2 PM", "11:00"),
        ("7:00 PM - 10:00 PM CST", "19:00"),
        ("starts at 6:45 pm", "18:45"),
        ("13:00 PM", "13:00"),
        ("2026-12-20T19:00:00", "19:00"),
    ],
)
def test_normalize_time(text: str, expected: str) -> None:
    assert normalize_time(text) == expected


@pytest.mark.parametrize("text", ["7", "7.30", "24:00", "7:75", "TBD", "All day", "", None])
def test_normalize_time_rejects(text: str | None) -> None:
    assert normalize_time(text) is None


# --- Event validators ---------------------------------------------------------------------


def test_event_normalizes_times_and_url() -> None:
    event = Event(
        name="  Carols  ",
        date="2026-12-12",
        start_time="7 PM",
        end_time="whenever",
        url="javascript:alert(1)",
    )

    assert event.name == "Carols"
    assert event.start_time == "19:00"
    assert event.end_time is None
    assert event.url is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.org/a?b=1", "https://example.org/a?b=1"),
        ("HTTP://example.org", "HTTP://example.org"),
        ("www.example.org", None),
        ("ftp://example.org/file", None),
        ("https://", None),
        ("https://exa mple.org", None),
        ("", None),
    ],
)
def test_event_url_must_be_http(url: str, expected: str | None) -> None:
    assert Event(name="A", date="2026-12-12", url=url).url == expected


def test_event_drops_end_date_not_after_start() -> None:
    assert Event(name="A", date="2026-12-12", end_date="2026-12-11").end_date is None
    assert Event(name="A", date="2026-12-12", end_date="2026-12-12").end_date is None
    assert Event(name="A", date="2026-12-12", end_date="2026-12-13").end_date == date(2026, 12, 13)


def test_event_coerces_text_fields() -> None:
    event = Event(name="A", date="2026-12-12", category=["music", "family"], venue="", state=78)

    assert event.category == "music, family"
    assert event.venue is None
    assert event.state == "78"


# --- finding the JSON ---------------------------------------------------------------------

HOLIDAY = {"name": "Holiday Market", "date": "2026-12-12"}
CAROLS = {"name": "Carols in the Park", "date": "2026-12-19"}


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"events": [HOLIDAY, CAROLS]}),
        json.dumps({"data": [HOLIDAY, CAROLS]}),
        json.dumps({"results": [HOLIDAY, CAROLS]}),
        json.dumps({"Events": [HOLIDAY, CAROLS]}),
        json.dumps({"data": {"events": [HOLIDAY, CAROLS]}}),
        json.dumps({"response": {"upcoming": [HOLIDAY, CAROLS]}}),
        json.dumps([HOLIDAY, CAROLS]),
        "```json\n" + json.dumps([HOLIDAY, CAROLS]) + "\n```",
        "```\n" + json.dumps({"events": [HOLIDAY, CAROLS]}) + "\n```\nHope this helps.",
        "Sources [1] and [2] list these:\n" + json.dumps({"events": [HOLIDAY, CAROLS]}),
        "Example:\n```python\nprint('hi')\n```\nAnswer:\n```json\n"
        + json.dumps({"events": [HOLIDAY, CAROLS]})
        + "\n```",
        "Note {this} first. " + json.dumps({"events": [HOLIDAY, CAROLS]}) + " Done.",
        json.dumps(json.dumps({"events": [HOLIDAY, CAROLS]})),
    ],
    ids=[
        "events key",
        "data wrapper",
        "results wrapper",
        "capitalized key",
        "nested wrapper",
        "unknown wrapper key",
        "bare array",
        "fenced array",
        "fence without language",
        "citations before JSON",
        "second fenced block",
        "stray braces in prose",
        "double-encoded string",
    ],
)
def test_answer_shapes_give_two_events(content: str) -> None:
    parsed = _parse(content)

    assert [event.name for event in parsed.events] == ["Holiday Market", "Carols in the Park"]


def test_single_event_object() -> None:
    parsed = _parse("Here it is: " + json.dumps(HOLIDAY))

    assert [event.name for event in parsed.events] == ["Holiday Market"]


def test_single_event_under_events_key() -> None:
    parsed = _parse(json.dumps({"events": HOLIDAY}))

    assert len(parsed.events) == 1


@pytest.mark.parametrize(
    "content", ['{"events": null}', "[]", "No events found: []", '{"events": [], "note": "x"}']
)
def test_empty_answers(content: str) -> None:
    parsed = _parse(content)

    assert parsed.events == ()
    assert parsed.dropped == 0


@pytest.mark.parametrize(
    "content",
    [
        "",
        "   ",
        "I could not find any events.",
        "See [1] and [2].",
        '{"note": "no data"}',
        '{"events": ["Holiday Market on Dec 12"]}',
        # An answer cut off inside the list must not yield its first complete event.
        '{"events":[{"name":"Holiday Market","date":"2026-12-12"},{"name":"Tree Li',
    ],
    ids=[
        "empty",
        "blank",
        "prose only",
        "citations only",
        "object without list",
        "list of strings",
        "truncated list",
    ],
)
def test_answer_without_events_list(content: str) -> None:
    with pytest.raises(AnswerParseError, match="events list"):
        _parse(content)


def test_field_aliases_and_location_object() -> None:
    raw = {
        "Title": "Winter Fair",
        "start_date": "Dec 12",
        "time": "6 PM",
        "link": "https://example.org/fair",
        "location": {"name": "Zilker Park", "city": "Austin", "state": "TX"},
    }

    event = _parse(json.dumps({"events": [raw]})).events[0]

    assert event.name == "Winter Fair"
    assert event.date == date(2026, 12, 12)
    assert event.start_time == "18:00"
    assert event.url == "https://example.org/fair"
    assert event.venue == "Zilker Park"
    assert event.city == "Austin"


def test_end_date_field_and_datetime_times() -> None:
    raw = {
        "name": "Light Show",
        "date": "2026-12-12T18:30:00",
        "end_date": "2026-12-14T22:00:00",
    }

    event = _parse(json.dumps([raw])).events[0]

    assert event.date == date(2026, 12, 12)
    assert event.end_date == date(2026, 12, 14)
    assert event.start_time == "18:30"
    assert event.end_time == "22:00"


def test_explicit_start_time_beats_datetime() -> None:
    raw = {"name": "Show", "date": "2026-12-12T18:30:00", "start_time": "7 PM"}

    assert _parse(json.dumps([raw])).events[0].start_time == "19:00"


def test_invalid_events_are_counted() -> None:
    content = json.dumps(
        [
            HOLIDAY,
            {"name": "No date"},
            {"date": "2026-12-12"},
            {"name": "   ", "date": "2026-12-12"},
            {"name": "Bad date", "date": "sometime soon"},
            {"name": "Numeric date", "date": 20261212},
            "just a string",
            42,
        ]
    )

    parsed = _parse(content)

    assert [event.name for event in parsed.events] == ["Holiday Market"]
    assert parsed.dropped_invalid == 7
    assert parsed.dropped_out_of_window == 0
    assert parsed.dropped == 7


def test_runaway_answer_capped() -> None:
    raw = [{"name": f"Event {index}", "date": "2026-12-12"} for index in range(250)]

    parsed = _parse(json.dumps(raw))

    assert len(parsed.events) == MAX_EVENTS_PER_ANSWER == 200
    assert parsed.events[-1].name == "Event 199"
    assert parsed.dropped_over_limit == 50
    assert parsed.dropped == 50


def test_long_text_cut_long_url_dropped() -> None:
    raw = {
        "name": "N" * 5000,
        "date": "2026-12-12",
        "description": "word " * 2000,
        "url": "https://example.com/" + "a" * 3000,
    }

    event = _parse(json.dumps([raw])).events[0]

    assert len(event.name) == 300
    assert event.name.endswith("\u2026")
    assert len(event.description) <= 1000
    assert event.description.endswith("\u2026")
    assert event.url is None


# --- window -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ({"date": "2026-12-04"}, True),
        ({"date": "2027-01-03"}, True),
        ({"date": "2026-12-03"}, False),
        ({"date": "2027-01-04"}, False),
        ({"date": "2026-11-20", "end_date": "2026-12-04"}, True),
        ({"date": "2026-11-20", "end_date": "2026-12-03"}, False),
        ({"date": "2026-12-30", "end_date": "2027-02-01"}, True),
        ({"date": "Nov 28 - Dec 6"}, True),
        ({"date": "Dec 1"}, False),
        ({"date": "Jan 2"}, True),
        ({"date": "2025-12-12"}, False),
    ],
)
def test_window_edges(raw: dict, kept: bool) -> None:
    parsed = _parse(json.dumps([{"name": "Event", **raw}]))

    assert len(parsed.events) == (1 if kept else 0)
    assert parsed.dropped_out_of_window == (0 if kept else 1)


def test_zero_day_window_keeps_only_today() -> None:
    content = json.dumps([{"name": "A", "date": "2026-12-04"}, {"name": "B", "date": "2026-12-05"}])

    parsed = _parse(content, window_days=0)

    assert [event.name for event in parsed.events] == ["A"]


def test_negative_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="window_days"):
        _parse("[]", window_days=-1)


# --- duplicates ---------------------------------------------------------------------------


def test_duplicates_keep_first() -> None:
    content = json.dumps(
        [
            {"name": "Holiday  Market", "date": "2026-12-12", "venue": "First"},
            {"name": " holiday market\n", "date": "Dec 12", "venue": "Second"},
            {"name": "HOLIDAY MARKET", "date": "2026-12-12", "venue": "Third"},
            {"name": "Holiday Market", "date": "2026-12-13", "venue": "Other day"},
            {"name": "Holiday Markets", "date": "2026-12-12", "venue": "Other name"},
        ]
    )

    parsed = _parse(content)

    assert [event.venue for event in parsed.events] == ["First", "Other day", "Other name"]
    assert parsed.duplicates_removed == 2
    assert parsed.dropped == 0


def test_window_drops_not_counted_as_duplicates() -> None:
    old = {"name": "Old", "date": "2025-12-12"}
    content = json.dumps([old, old])

    parsed = _parse(content)

    assert parsed.dropped_out_of_window == 2
    assert parsed.duplicates_removed == 0
