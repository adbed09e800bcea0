"""Synchronous HTTP client for the location slug API and data API."""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from center_pipeline.locations.models import Center, CenterNotFound, LocationApiError
from center_pipeline.locations.normalize import (
    extract_slugs,
    next_page_url,
    normalize_center,
    unwrap_detail,
)

logger = logging.getLogger(__name__)

_USERINFO_RE = re.compile(r"(\w+://)[^/\s@]+@")

MAX_SLUG_PAGES = 1000
MAX_CONNECTIONS = 100  # Leaves room above a 64-thread sync pool sharing one client.
MAX_KEEPALIVE_CONNECTIONS = 64
MAX_CONNECT_TIMEOUT_SECONDS = 5.0
MAX_ERROR_BODY_CHARS = 200

SLUG_URL_SETTING = "LOCATION_SLUG_API_URL"
DATA_URL_SETTING = "LOCATION_DATA_API_URL"
API_KEY_SETTING = "LOCATION_API_KEY"


class _RetryableError(Exception):
    """A failed attempt that may succeed when repeated."""

    def __init__(self, reason: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds


class LocationApiClient:
    """Fetch center slugs and center details from the location APIs.

    One httpx.Client is shared by all calls, so one instance may be used from a thread
    pool. Use it as a context manager, or call close(), to release its connections.

    The API key is sent as "Authorization: Bearer <key>". It is kept only in the httpx
    client's headers and is replaced by "***" in every error message and log line built
    here, including response bodies quoted in errors.
    """

    def __init__(
        self,
        slug_api_url: str,
        data_api_url: str,
        api_key: str | None = None,
        *,
        timeout_seconds: float = 10.0,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        max_retry_after_seconds: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Create the client.

        Args:
            slug_api_url: URL whose GET returns the list of center slugs (first page).
            data_api_url: Base URL of the data API. A detail is GET {data_api_url}/slug/{slug}.
            api_key: Optional bearer token for both APIs.
            timeout_seconds: Read, write and pool timeout per request, in seconds. The
                connect timeout is the smaller of this and 5 seconds.
            max_attempts: Attempts per request, including the first one.
            backoff_seconds: Base delay before the first retry, in seconds. It doubles on
                each further retry, with random jitter of up to half the delay.
            max_backoff_seconds: Upper limit of one backoff delay, in seconds.
            max_retry_after_seconds: Longest Retry-After wait that is honoured, in seconds.
                A longer request fails at once.
            transport: Optional httpx transport, for example httpx.MockTransport.

        Raises:
            ValueError: A URL is empty or a numeric setting is out of range.
        """
        if not slug_api_url or not slug_api_url.strip():
            raise ValueError(f"{SLUG_URL_SETTING} is empty. Set it to the slug list URL")
        if not data_api_url or not data_api_url.strip():
            raise ValueError(f"{DATA_URL_SETTING} is empty. Set it to the data API base URL")
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if backoff_seconds < 0 or max_backoff_seconds < 0 or max_retry_after_seconds < 0:
            raise ValueError("backoff and Retry-After limits must not be negative")

        self.slug_api_url = slug_api_url.strip()
        self.data_api_url = data_api_url.strip().rstrip("/")
        self._secret = api_key.strip() if api_key and api_key.strip() else None
        self._timeout_seconds = timeout_seconds
        self._max_attempts = max_attempts
        self._backoff_seconds = backoff_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._max_retry_after_seconds = max_retry_after_seconds

        headers = {"Accept": "application/json", "User-Agent": "center_pipeline"}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        # httpx drops the Authorization header on redirects to another origin.
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(
                timeout_seconds, connect=min(timeout_seconds, MAX_CONNECT_TIMEOUT_SECONDS)
            ),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
            ),
            follow_redirects=True,
            transport=transport,
        )

    def __repr__(self) -> str:
        key_state = "set" if self._secret else "not set"
        return (
            f"LocationApiClient(slug_api_url={self._redact(self.slug_api_url)!r}, "
            f"data_api_url={self._redact(self.data_api_url)!r}, api_key={key_state})"
        )

    def __enter__(self) -> LocationApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying httpx client and its connections."""
        self._client.close()

    def fetch_slugs(self) -> list[str]:
        """Fetch all center slugs, following next-page links, without repeats.

        A page whose next link points to itself ends the list. A link back to an earlier
        page raises, because some pages may then never have been read.

        Raises:
            LocationApiError: A page fails after retries, a body has no slug list, the
                pages loop or exceed MAX_SLUG_PAGES, or no slug is found at all.
        """
        url: str | None = self.slug_api_url
        visited: set[str] = set()
        slugs: dict[str, None] = {}  # A dict keeps the first order and drops repeats.
        while url is not None:
            if url in visited:
                raise LocationApiError(
                    f"slug list pagination loops back to {self._redact(url)} after "
                    f"{len(visited)} pages. Check the next links the slug API returns"
                )
            if len(visited) >= MAX_SLUG_PAGES:
                raise LocationApiError(
                    f"slug list has more than {MAX_SLUG_PAGES} pages, stopped at "
                    f"{self._redact(url)}. Check the next links the slug API returns"
                )
            visited.add(url)

            body = self._get_json(url, setting=SLUG_URL_SETTING, not_found=LocationApiError)
            try:
                page_slugs = extract_slugs(body)
                next_url = next_page_url(body, url)
            except LocationApiError as exc:
                raise LocationApiError(
                    f"GET {self._redact(url)}: {self._redact(str(exc))}"
                ) from None
            slugs.update(dict.fromkeys(page_slugs))
            url = None if next_url == url else next_url

        if not slugs:
            raise LocationApiError(
                f"slug API returned no slugs from {self._redact(self.slug_api_url)} "
                f"({len(visited)} pages). Check {SLUG_URL_SETTING}"
            )
        logger.info("Fetched %d center slugs from %d pages", len(slugs), len(visited))
        return list(slugs)

    def fetch_center(self, slug: str, default_radius_miles: float) -> Center:
        """Fetch and normalize the detail of one center.

        Raises:
            CenterNotFound: The data API responds 404 or with an empty body for the slug.
            SkipRecord: The record cannot become a center (see normalize_center).
            LocationApiError: The request fails after retries or the body is unusable.
        """
        url = self.detail_url(slug)
        body = self._get_json(url, setting=DATA_URL_SETTING, not_found=CenterNotFound)
        try:
            record = unwrap_detail(body)
        except CenterNotFound as exc:
            message = f"center {slug!r} not found at {self._redact(url)}: {exc}"
            raise CenterNotFound(message) from None
        except LocationApiError as exc:
            raise LocationApiError(f"GET {self._redact(url)}: {self._redact(str(exc))}") from None
        return normalize_center(record, slug, default_radius_miles)

    def detail_url(self, slug: str) -> str:
        """Return the detail URL of slug, percent-encoded as one path segment."""
        if not slug or not slug.strip():
            raise ValueError("slug must not be empty")
        segment = quote(slug, safe="")
        # "." and ".." are left as they are by quote(), and httpx would resolve them as
        # relative path segments, so they are encoded explicitly.
        if segment in (".", ".."):
            segment = segment.replace(".", "%2E")
        return f"{self.data_api_url}/slug/{segment}"

    def _get_json(self, url: str, *, setting: str, not_found: type[Exception]) -> Any:
        """GET url and return its JSON body, retrying transient failures.

        Raises:
            not_found: The server responds 404.
            LocationApiError: Any other failure, after retries where they apply.
        """
        reason = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return self._get_json_once(url, setting=setting, not_found=not_found)
            except _RetryableError as exc:
                reason = exc.reason
                if attempt == self._max_attempts:
                    break
                delay = exc.retry_after_seconds
                if delay is None:
                    delay = self._backoff_delay(attempt)
                logger.warning(
                    "GET %s failed (%s) on attempt %d of %d, retrying in %.2f s",
                    self._redact(urlsplit(url).path), reason, attempt, self._max_attempts, delay,
                )
                time.sleep(delay)
        raise LocationApiError(
            f"GET {self._redact(url)} failed after {self._max_attempts} attempts: {reason}. "
            f"Check that {setting} is correct and that the server is up"
        )

    def _get_json_once(self, url: str, *, setting: str, not_found: type[Exception]) -> Any:
        """Make one GET request and raise _RetryableError for failures worth repeating."""
        try:
            response = self._client.get(url)
        except httpx.TimeoutException as exc:
            raise _RetryableError(
                f"timed out after {self._timeout_seconds} s ({type(exc).__name__})"
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.DecodingError) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {self._redact(str(exc))}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise LocationApiError(
                f"GET {self._redact(url)} failed: {type(exc).__name__}: "
                f"{self._redact(str(exc))}. Check {setting}"
            ) from None

        status = response.status_code
        if status == 404:
            message = f"GET {self._redact(url)} returned HTTP 404 Not Found"
            # A missing center is routine, but a missing slug list means a wrong setting.
            if not_found is not CenterNotFound:
                message += f". Check {setting}"
            raise not_found(message)
        if status == 429 or status == 503:
            raise _RetryableError(f"HTTP {status}", self._retry_after(response, url))
        if status >= 500:
            raise _RetryableError(f"HTTP {status}")
        if not 200 <= status < 300:
            raise LocationApiError(self._client_error_message(response, url, setting))

        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # Decision: malformed JSON is retried like a 5xx, because a truncated body from
            # a proxy or an interrupted upstream is usually transient.
            raise _RetryableError(f"HTTP {status} with a malformed JSON body ({exc})") from None

    def _retry_after(self, response: httpx.Response, url: str) -> float | None:
        """Return the Retry-After wait in seconds, None if absent or unreadable.

        Raises:
            LocationApiError: The wait is longer than max_retry_after_seconds.
        """
        header = response.headers.get("Retry-After")
        if header is None:
            return None
        seconds = _parse_retry_after(header)
        if seconds is None:
            logger.warning(
                "Ignoring unreadable Retry-After header %r", self._redact(header[:50])
            )
            return None
        if seconds > self._max_retry_after_seconds:
            raise LocationApiError(
                f"GET {self._redact(url)} returned HTTP {response.status_code} with "
                f"Retry-After {seconds:.0f} s, longer than the maximum wait of "
                f"{self._max_retry_after_seconds:.0f} s, so it was not retried. Lower the "
                f"request rate or raise max_retry_after_seconds"
            )
        return seconds

    def _backoff_delay(self, attempt: int) -> float:
        """Return the delay before retry number attempt: exponential, with jitter."""
        delay = min(self._max_backoff_seconds, self._backoff_seconds * 2 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)

    def _client_error_message(self, response: httpx.Response, url: str, setting: str) -> str:
        status = response.status_code
        if status in (401, 403):
            hint = f"Check {API_KEY_SETTING}"
        else:
            hint = f"Check {setting}"
        body = " ".join(response.text[:MAX_ERROR_BODY_CHARS].split())
        return self._redact(
            f"GET {url} returned HTTP {status} {response.reason_phrase}. {hint}. "
            f"Response body starts: {body!r}"
        )

    def _redact(self, text: str) -> str:
        """Return text with the API key and any URL password replaced by "***"."""
        if self._secret:
            text = text.replace(self._secret, "***")
        return _redact_userinfo(text)


def _parse_retry_after(header: str) -> float | None:
    """Return the wait in seconds of a Retry-After value (seconds or HTTP-date)."""
    value = header.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _redact_userinfo(text: str) -> str:
    """Replace user:password@ in URLs inside text with ***@."""
    return _USERINFO_RE.sub(r"\1***@", text)

