"""The event record that the LLM answer is validated into and that each CSV row holds."""

import logging
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from center_pipeline.events.dates import normalize_time

logger = logging.getLogger(__name__)

# Column order of every events CSV. The header is written even when there are no events.
EVENT_CSV_COLUMNS = (
    "name",
    "date",
    "end_date",
    "start_time",
    "end_time",
    "venue",
    "address",
    "city",
    "state",
    "url",
    "description",
    "category",
    "source_url",
)


# Max characters kept per text field. Longer text is cut, so that one runaway LLM response
# cannot bloat a CSV that the marketing team opens in a spreadsheet. Longer URLs are dropped.
MAX_TEXT_LENGTH = {"description": 1000}
DEFAULT_MAX_TEXT_LENGTH = 300
MAX_URL_LENGTH = 2048


class Event(BaseModel):
    """One local event, with dates in ISO form and times as HH:MM (24-hour)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    name: str = Field(min_length=1)
    date: date
    end_date: date | None = None
    start_time: str | None = None
    end_time: str | None = None
    venue: str | None = None
    address: str | None = None
    city: str | None = None
    state: str | None = None
    url: str | None = None
    description: str | None = None
    category: str | None = None
    # The page that the provider's web search cited for this event. Only citation matching
    # in `grounded.py` sets it, and the chat-completions path in `batch.py` clears it.
    source_url: str | None = None

    @field_validator(
        "name", "venue", "address", "city", "state", "description", "category", mode="before"
    )
    @classmethod
    def _coerce_text(cls, value: Any, info: ValidationInfo) -> str | None:
        """Turn numbers and lists of scalars into text, blank text into None, and cut long text."""
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            value = str(value)
        elif isinstance(value, list):
            items = [str(item).strip() for item in value if isinstance(item, str | int | float)]
            value = ", ".join(item for item in items if item)
        elif not isinstance(value, str):
            return None
        value = value.strip()
        limit = MAX_TEXT_LENGTH.get(info.field_name, DEFAULT_MAX_TEXT_LENGTH)
        if len(value) > limit:
            logger.debug("Cut event %s of %d characters to %d", info.field_name, len(value), limit)
            value = value[: limit - 1].rstrip() + "…"
        return value or None

    @field_validator("start_time", "end_time", mode="before")
    @classmethod
    def _normalize_time(cls, value: Any) -> str | None:
        """Convert a clock time to HH:MM (24-hour). An unreadable time becomes None."""
        if not isinstance(value, str) or not value.strip():
            return None
        normalized = normalize_time(value)
        if normalized is None:
            logger.debug("Ignored unreadable event time %r", value[:80])
        return normalized

    @field_validator("url", "source_url", mode="before")
    @classmethod
    def _require_http_url(cls, value: Any) -> str | None:
        """Keep only absolute http(s) URLs without whitespace. Anything else becomes None."""
        return http_url_or_none(value)

    @field_validator("end_date")
    @classmethod
    def _drop_end_not_after_start(cls, value: date | None, info: ValidationInfo) -> date | None:
        """Drop an end date that is not after the start date (a one-day event has none)."""
        start = info.data.get("date")
        if value is not None and start is not None and value <= start:
            return None
        return value


def http_url_or_none(value: Any) -> str | None:
    """Return `value` stripped if it is an absolute http(s) URL without whitespace, else None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > MAX_URL_LENGTH:
        return None
    if any(char.isspace() or ord(char) < 32 for char in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return value
