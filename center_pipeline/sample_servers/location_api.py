"""Sample location API that serves a slug list and one detail body per slug.

Routes:
    GET /api/slugs: the slug list, in the shape set by `slug_shape`.
    GET /api/slug/{slug}: the detail body of one center. The slug is one percent-encoded
        path segment, so a slug containing "/" arrives as "%2F".
    GET /health: liveness check.

A network is a list of entries `{"slug": str, "detail": body}`. The detail body is served
as stored, so it may have any shape a real API returns. An entry with `"detail": null` is
listed but its detail returns 404, and an entry with `"listed": false` has a detail but
is left out of the slug list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

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

SLUG_LIST_PATH = "/api/slugs"
DATA_BASE_PATH = "/api"
DETAIL_PATH_PREFIX = f"{DATA_BASE_PATH}/slug/"
DEFAULT_PAGE_SIZE = 100


class SlugShape(StrEnum):
    """Body shape of the slug list."""

    LIST = "list"  # ["a", "b"]
    OBJECT = "object"  # {"slugs": ["a", "b"], "count": 2}
    PAGINATED = "paginated"  # {"count": 2, "next": url | null, "previous": ..., "results": [...]}


class NetworkIndex:
    """Listed slugs in network order and detail bodies by slug."""

    def __init__(self, network: Iterable[dict[str, Any]]) -> None:
        self.slugs: list[str] = []
        self.details: dict[str, Any] = {}
        for position, entry in enumerate(network):
            slug = entry.get("slug") if isinstance(entry, dict) else None
            if not isinstance(slug, str) or not slug:
                raise ValueError(
                    f"Network entry {position} has no non-empty string 'slug': {entry!r}"
                )
            if slug in self.details:
                raise ValueError(f"Network entry {position} repeats the slug {slug!r}")
            self.details[slug] = entry.get("detail")
            if entry.get("listed", True):
                self.slugs.append(slug)


def create_location_app(
    network: Iterable[dict[str, Any]],
    faults: FaultPlan,
    *,
    slug_shape: str = SlugShape.LIST,
    page_size: int = DEFAULT_PAGE_SIZE,
    api_key: str | None = None,
    counter: RequestCounter | None = None,
) -> FastAPI:
    """Build the sample location API.

    Args:
        network: Entries `{"slug": str, "detail": body}`, optionally with `"listed": false`.
        faults: Faults to inject. Replace `app.state.faults` to change them while serving.
        slug_shape: "list", "object" or "paginated".
        page_size: Slugs per page when `slug_shape` is "paginated".
        api_key: When set, requests without `Authorization: Bearer <api_key>` get 401.
        counter: Counter to increment, or None to make a new one.

    Returns:
        The app. `app.state` contains `faults`, `counter` and `network` (a `NetworkIndex`),
        which can be replaced between requests.

    Raises:
        ValueError: If `slug_shape`, `page_size` or a network entry is invalid.
    """
    shape = SlugShape(slug_shape)
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")

    app = FastAPI(title="Sample location API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = faults
    app.state.counter = counter if counter is not None else RequestCounter()
    app.state.network = NetworkIndex(network)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "listed_centers": len(app.state.network.slugs)}

    @app.get(SLUG_LIST_PATH)
    async def list_slugs(request: Request, page: int = 1) -> Response:
        key = f"page-{page}" if shape is SlugShape.PAGINATED else "all"
        attempt = app.state.counter.increment(RequestKind.SLUGS, key)
        plan: FaultPlan = app.state.faults
        await _apply_latency(plan)

        if not _is_authorized(request, api_key):
            logger.info("Rejected slug list request %s: missing or invalid bearer token", key)
            return _error_response(401, "Missing or invalid bearer token.")
        slugs: list[str] = app.state.network.slugs
        if shape is SlugShape.PAGINATED:
            last_page = max(1, -(-len(slugs) // page_size))
            if not 1 <= page <= last_page:
                message = f"Invalid page {page}. Pages run from 1 to {last_page}."
                logger.info("Slug list request failed: %s", message)
                return _error_response(404, message)
        body = _slug_list_body(request, slugs, shape, page, page_size)

        fault = decide_fault(plan, RequestKind.SLUGS, key, attempt)
        if fault is not None:
            logger.debug("Injecting %s into slug list request %s #%d", fault, key, attempt)
            return _fault_response(fault, body)
        return JSONResponse(body)

    @app.get(DETAIL_PATH_PREFIX + "{encoded_slug:path}")
    async def get_detail(request: Request, encoded_slug: str) -> Response:
        slug = _slug_from_raw_path(request, encoded_slug)
        attempt = app.state.counter.increment(RequestKind.DETAIL, slug or "")
        plan: FaultPlan = app.state.faults
        await _apply_latency(plan)
        await asyncio.sleep(stall_seconds(plan, RequestKind.DETAIL, attempt))

        if not _is_authorized(request, api_key):
            logger.info("Rejected detail request %r: missing or invalid bearer token", slug)
            return _error_response(401, "Missing or invalid bearer token.")
        if slug is None:
            logger.info("Detail path %r has more than one segment", request.url.path)
            return _error_response(
                404, "The slug must be one path segment. Percent-encode '/' as %2F."
            )
        fault = decide_fault(plan, RequestKind.DETAIL, slug, attempt)
        details: dict[str, Any] = app.state.network.details
        detail = details.get(slug)
        if fault is not None and (fault.type is not FaultType.MALFORMED or detail is not None):
            logger.debug("Injecting %s into detail request %r #%d", fault, slug, attempt)
            return _fault_response(fault, detail)
        if detail is None:
            logger.info("Detail request for unknown or detail-less slug %r", slug)
            return _error_response(404, f"No center with slug {slug!r}.")
        return JSONResponse(detail)

    return app


def _slug_list_body(
    request: Request, slugs: list[str], shape: SlugShape, page: int, page_size: int
) -> Any:
    """Return the slug list body in the requested shape."""
    if shape is SlugShape.LIST:
        return slugs
    if shape is SlugShape.OBJECT:
        return {"slugs": slugs, "count": len(slugs)}

    start = (page - 1) * page_size
    has_next = start + page_size < len(slugs)
    return {
        "count": len(slugs),
        "next": str(request.url.include_query_params(page=page + 1)) if has_next else None,
        "previous": str(request.url.include_query_params(page=page - 1)) if page > 1 else None,
        "results": [{"slug": slug} for slug in slugs[start : start + page_size]],
    }


def _slug_from_raw_path(request: Request, decoded_path: str) -> str | None:
    """Return the slug of a detail request, or None if the path has more than one segment.

    The router matches the decoded path, where "a%2Fb" and "a/b" are the same. The raw path
    keeps them apart, so a client that forgets to encode "/" gets a 404 as from a real API.
    """
    raw_path = request.scope.get("raw_path")
    if not raw_path:
        raw_segment = decoded_path
    else:
        raw_text = raw_path.decode("latin-1")
        prefix_end = raw_text.find(DETAIL_PATH_PREFIX)
        raw_segment = raw_text[prefix_end + len(DETAIL_PATH_PREFIX) :] if prefix_end >= 0 else ""
    if not raw_segment or "/" in raw_segment:
        return None
    return unquote(raw_segment)


async def _apply_latency(plan: FaultPlan) -> None:
    if plan.latency_ms > 0:
        await asyncio.sleep(plan.latency_ms / 1000)


def _is_authorized(request: Request, api_key: str | None) -> bool:
    if api_key is None:
        return True
    return request.headers.get("authorization") == f"Bearer {api_key}"


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"status": status, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _fault_response(fault: Fault, normal_body: Any) -> Response:
    """Return the response for an injected fault on the location API."""
    if fault.type is FaultType.MALFORMED:
        return Response(cut_json(normal_body), status_code=200, media_type="application/json")

    headers = retry_after_headers(fault.retry_after_seconds)
    message = f"{status_phrase(fault.status)} (fault injected by the sample server)."
    return _error_response(fault.status, message, headers)

