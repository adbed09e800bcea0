"""Parse the free-form dates and times that LLM answers put into event fields.

Dates come as ISO dates or datetimes, US numeric dates ("12/12/2026"), month names with or
without a weekday or year ("Saturday, December 12"), and ranges ("Dec 12-14",
"December 30 - January 2, 2027", "2026-12-12 to 2026-12-14"). Times come as "7 PM",
"7:30pm", "19:00:00", "noon" and ranges such as "7-10 PM".
"""

import logging
import re
from datetime import date, datetime

from dateutil import parser as dateutil_parser

logger = logging.getLogger(__name__)

# dateutil fills every component the text lacks from `default`. Parsing with two defaults
# that differ in year, month, day and hour shows which components the text really contains.
# Both defaults are in leap years so that "Feb 29" parses, and both months have 31 days.
_DEFAULT_A = datetime(2000, 1, 1, 0, 0)
_DEFAULT_B = datetime(2004, 3, 2, 1, 0)

# Years tried for a year-less date: the run date's year and the next ones, so that
# "Feb 29" still finds a leap year.
_YEAR_LESS_LOOKAHEAD = 8

_DASHES_RE = re.compile(r"[\u2010-\u2015\u2212]")
_ORDINAL_RE = re.compile(r"(?<=\d)(st|nd|rd|th)\b", re.IGNORECASE)
_PARENTHESES_RE = re.compile(r"\([^)]*\)")
_ISO_DATE = r"\d{4}-\d{1,2}-\d{1,2}"
_ISO_RANGE_RE = re.compile(rf"^({_ISO_DATE})\s*(?:-|/|\.\.)\s*({_ISO_DATE})$")
_WORD_SEPARATOR_RE = re.compile(r"\s+(?:to|through|thru|until|till|-)\s+", re.IGNORECASE)
# "between Dec 12 and Dec 14" is a range. Elsewhere "and" joins separate days, so
# "Dec 12 and 19" keeps only its first day.
_BETWEEN_RE = re.compile(r"^between\s+(?P<first>.+?)\s+and\s+(?P<last>.+)$", re.IGNORECASE)
_AND_RE = re.compile(r"\s+(?:and|&)\s+", re.IGNORECASE)
# "Dec 12-14", "Saturday, December 12 - 14, 2026": one month, two days, optional year.
_DAY_RANGE_AFTER_MONTH_RE = re.compile(
    r"^(?P<head>.*[A-Za-z]\.?,?\s+)(?P<first>\d{1,2})\s*-\s*(?P<last>\d{1,2})"
    r"(?P<tail>(?:,?\s*\d{4})?)$"
)
# "12-14 December 2026": two days before the month.
_DAY_RANGE_BEFORE_MONTH_RE = re.compile(
    r"^(?P<first>\d{1,2})\s*-\s*(?P<last>\d{1,2})(?P<tail>\s+[A-Za-z].*)$"
)
_BARE_DAY_RE = re.compile(r"^(?P<day>\d{1,2})(?:,?\s*(?P<year>\d{4}))?$")
_LEADING_WORD_RE = re.compile(r"^(?:from|on)\s+", re.IGNORECASE)

_TIME_RE = re.compile(
    r"(?<![\d:.])(?P<hour>\d{1,2})"
    r"(?:(?P<separator>[:.])(?P<minute>\d{2})(?::\d{2}(?:\.\d+)?)?)?(?!\d)"
    r"\s*(?:(?P<meridiem>[ap])\.?\s*m\b\.?)?",
    re.IGNORECASE,
)
# "7-10 PM": the first time takes the meridiem of the second.
_TIME_RANGE_SHARED_MERIDIEM_RE = re.compile(
    r"(?<![\d:.])(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*-\s*"
    r"(?P<end_hour>\d{1,2})(?::\d{2})?\s*(?P<meridiem>[ap])\.?\s*m\b",
    re.IGNORECASE,
)
_NAMED_TIMES = {"noon": "12:00", "midday": "12:00", "midnight": "00:00"}


def normalize_time(text: str | None) -> str | None:
    """Convert a clock time such as "7 PM", "7:30pm" or "19:00:00" to "HH:MM" (24-hour).

    The first time in the text wins, so "7:00 PM - 10:00 PM CST" gives "19:00". A bare
    hour without minutes or AM/PM ("7") is ambiguous and gives None.

    Returns:
        The time as "HH:MM", or None when the text contains no valid time.
    """
    if text is None:
        return None
    cleaned = _DASHES_RE.sub("-", str(text)).strip()
    if not cleaned:
        return None

    shared = _TIME_RANGE_SHARED_MERIDIEM_RE.search(cleaned)
    if shared is not None:
        start_hour = int(shared["hour"])
        end_hour = int(shared["end_hour"])
        meridiem = shared["meridiem"].lower()
        # "11-2 PM" starts in the morning: a start hour after the end hour crosses noon.
        if start_hour > end_hour and start_hour != 12:
            meridiem = "a" if meridiem == "p" else "p"
        result = _clock_time(start_hour, int(shared["minute"] or 0), meridiem)
        if result is not None:
            return result

    for match in _TIME_RE.finditer(cleaned):
        meridiem = match["meridiem"]
        minute = match["minute"]
        if minute is None and meridiem is None:
            continue
        if match["separator"] == "." and meridiem is None:
            continue
        result = _clock_time(
            int(match["hour"]), int(minute or 0), meridiem.lower() if meridiem else None
        )
        if result is not None:
            return result

    lowered = cleaned.casefold()
    for word, value in _NAMED_TIMES.items():
        if re.search(rf"\b{word}\b", lowered):
            return value
    return None


def _clock_time(hour: int, minute: int, meridiem: str | None) -> str | None:
    if minute > 59:
        return None
    if meridiem is not None and 1 <= hour <= 12:
        if meridiem == "a":
            hour = 0 if hour == 12 else hour
        else:
            hour = 12 if hour == 12 else hour + 12
    # Without AM/PM, or with a wrong one such as "13:00 PM", the hour is read as 24-hour.
    if hour > 23:
        return None
    return f"{hour:02d}:{minute:02d}"


def parse_event_date(
    text: str | None, run_date: date
) -> tuple[date | None, date | None, str | None]:
    """Parse an event's date text into its start date, end date and start time.

    A date without a year takes the run date's year, or the next year when it would fall
    before the run date. A year-less range is placed so that its end date is not before
    the run date, which keeps an event that is already running. A time is taken from a
    datetime ("2026-12-20T19:00:00-06:00" gives "19:00", local to the written offset).

    Args:
        text: The date as the LLM wrote it.
        run_date: The day of the run. It also resolves year-less dates.

    Returns:
        (start date, end date, start time). The end date is None unless the text is a range
        that ends after it starts. The time is "HH:MM" or None. All three are None when the
        text contains no full date.
    """
    if text is None:
        return None, None, None
    cleaned = _clean_date_text(str(text))
    if not cleaned:
        return None, None, None

    between = _BETWEEN_RE.match(cleaned)
    if between is not None:
        parts: tuple[str, str] | None = (between["first"], between["last"])
    else:
        cleaned = _AND_RE.split(cleaned, maxsplit=1)[0]
        parts = _split_range(cleaned)
    if parts is not None:
        result = _resolve_range(parts[0], parts[1], run_date)
        if result is not None:
            return result if result[0] is not None else (None, None, None)

    single = _parse_single(cleaned)
    if single is None:
        return None, None, None
    month, day, year, time_text = single
    start = _resolve_year(year, month, day, run_date)
    return start, None, time_text


def _clean_date_text(text: str) -> str:
    cleaned = _DASHES_RE.sub("-", text)
    cleaned = _PARENTHESES_RE.sub(" ", cleaned)
    cleaned = _ORDINAL_RE.sub("", cleaned)
    cleaned = " ".join(cleaned.split())
    return _LEADING_WORD_RE.sub("", cleaned).strip(" ,;")


def _split_range(text: str) -> tuple[str, str] | None:
    """Split a date range into its start and end text, or return None for a single date."""
    iso = _ISO_RANGE_RE.match(text)
    if iso is not None:
        return iso[1], iso[2]

    words = _WORD_SEPARATOR_RE.split(text, maxsplit=1)
    if len(words) == 2:
        return words[0], words[1]

    after_month = _DAY_RANGE_AFTER_MONTH_RE.match(text)
    if after_month is not None:
        head, tail = after_month["head"], after_month["tail"]
        return head + after_month["first"] + tail, head + after_month["last"] + tail

    before_month = _DAY_RANGE_BEFORE_MONTH_RE.match(text)
    if before_month is not None:
        tail = before_month["tail"]
        return before_month["first"] + tail, before_month["last"] + tail

    # "Dec 30-Jan 2" or "12/30/2026-1/2/2027": an unspaced hyphen between two dates. ISO and
    # "12-12-2026" dates also contain hyphens, so a split counts only if both sides parse.
    if "-" in text and (re.search(r"[A-Za-z]", text) or "/" in text):
        for position in [index for index, char in enumerate(text) if char == "-"]:
            left, right = text[:position].strip(), text[position + 1 :].strip()
            if _parse_single(left) is not None and _parse_single(right) is not None:
                return left, right
    return None


def _resolve_range(
    left: str, right: str, run_date: date
) -> tuple[date | None, date | None, str | None] | None:
    start_parts = _parse_single(left)
    if start_parts is None:
        return None
    start_month, start_day, start_year, start_time = start_parts

    bare_day = _BARE_DAY_RE.match(right)
    if bare_day is not None:
        end_parts = (start_month, int(bare_day["day"]), _int_or_none(bare_day["year"]), None)
    else:
        end_parts = _parse_single(right)
    if end_parts is None:
        # "Dec 12 - 7pm" or "Dec 12, 7 PM - 10 PM": the right side is a time, not a date.
        start = _resolve_year(start_year, start_month, start_day, run_date)
        return start, None, start_time or normalize_time(right)
    end_month, end_day, end_year, _ = end_parts

    if start_year is None and end_year is not None:
        # Only "December 30 - January 2, 2027" crosses into the end date's year.
        start_year = end_year - 1 if start_month > end_month else end_year
    if start_year is None:
        start, end = _resolve_year_less_range(start_month, start_day, end_month, end_day, run_date)
    else:
        start = _safe_date(start_year, start_month, start_day)
        if start is None:
            return None
        end = _resolve_year(end_year, end_month, end_day, start)

    if end is not None and end <= start:
        logger.debug("Ignored range end %s that is not after start %s", end, start)
        end = None
    return start, end, start_time


def _resolve_year_less_range(
    start_month: int, start_day: int, end_month: int, end_day: int, run_date: date
) -> tuple[date | None, date | None]:
    for year in range(run_date.year - 1, run_date.year + _YEAR_LESS_LOOKAHEAD):
        start = _safe_date(year, start_month, start_day)
        if start is None:
            continue
        end = _resolve_year(None, end_month, end_day, start)
        if end is not None and end >= run_date:
            return start, end
    return None, None


def _parse_single(text: str) -> tuple[int, int, int | None, str | None] | None:
    """Parse one date into (month, day, year or None, "HH:MM" or None).

    Returns None unless the text contains both a month and a day.
    """
    if not text or not re.search(r"\d", text):
        return None
    parsed = _parse_with_defaults(text, fuzzy=False)
    if parsed is None:
        parsed = _parse_with_defaults(text, fuzzy=True)
    if parsed is None:
        return None
    first, second = parsed
    if first.month != second.month or first.day != second.day:
        return None
    year = first.year if first.year == second.year else None

    time_text = None
    if first.hour == second.hour:
        time_text = f"{first.hour:02d}:{first.minute:02d}"
        # NOTE: a datetime at exactly midnight ("2026-12-12T00:00:00") is read as a date
        # without a time, because models often pad dates that way.
        if time_text == "00:00":
            time_text = None
    return first.month, first.day, year, time_text


def _parse_with_defaults(text: str, *, fuzzy: bool) -> tuple[datetime, datetime] | None:
    try:
        first = dateutil_parser.parse(text, default=_DEFAULT_A, fuzzy=fuzzy)
        second = dateutil_parser.parse(text, default=_DEFAULT_B, fuzzy=fuzzy)
    except (ValueError, OverflowError):
        return None
    return first, second


def _resolve_year(year: int | None, month: int, day: int, reference: date) -> date | None:
    """Build the date, or for a year-less date the first occurrence on or after `reference`."""
    if year is not None:
        return _safe_date(year, month, day)
    for candidate_year in range(reference.year, reference.year + _YEAR_LESS_LOOKAHEAD):
        candidate = _safe_date(candidate_year, month, day)
        if candidate is not None and candidate >= reference:
            return candidate
    return None


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text else None
