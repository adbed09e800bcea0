"""Records that the location API client returns after normalization."""

from dataclasses import dataclass
from enum import StrEnum


class CenterStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    COMING_SOON = "coming_soon"
    TEMPORARILY_CLOSED = "temporarily_closed"
    CLOSED = "closed"


@dataclass(frozen=True)
class Center:
    """One center as stored in the `centers` table, normalized from a detail response."""

    center_id: str
    slug: str
    center_name: str
    city: str | None
    state: str | None  # USPS two-letter code
    zip: str | None  # five digits
    owner_email: str | None  # lowercased
    radius_miles: float
    status: CenterStatus
    is_active: bool


class SkipRecord(Exception):
    """Raised when a detail record cannot become a center; the message is the reason."""


class CenterNotFound(Exception):
    """Raised when the data API has no detail for a listed slug (404 or an empty list)."""


class LocationApiError(Exception):
    """Raised when the location API fails after retries or returns an unusable body."""
