"""Concurrent detail fetching for a list of slugs."""

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from center_pipeline.locations.client import LocationApiClient
from center_pipeline.locations.models import (
    Center,
    CenterNotFound,
    LocationApiError,
    SkipRecord,
)
from center_pipeline.ratelimit import rate_limiter_or_none

logger = logging.getLogger(__name__)


@dataclass
class FetchOutcome:
    """Centers whose detail arrived, and the reason for every slug that did not make it."""

    centers: list[Center] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def fetch_centers(
    client: LocationApiClient,
    slugs: Sequence[str],
    *,
    concurrency: int,
    default_radius_miles: float,
    on_progress: Callable[[int, int], None] | None = None,
    requests_per_second: float | None = None,
) -> FetchOutcome:
    """Fetch and normalize every slug's detail, `concurrency` requests at a time.

    With `requests_per_second`, detail requests also start at most that often, across all
    threads. One slug's failure never stops the others: it is recorded in `failed` (API
    errors, 404s) or `skipped` (records that cannot become a center) with the reason.
    """
    outcome = FetchOutcome()
    limiter = rate_limiter_or_none(requests_per_second)

    def fetch_one(slug: str) -> Center:
        # NOTE: the limit spaces each slug's first attempt. The client's retries of 429 and
        # 5xx responses wait for their backoff or Retry-After instead of a limiter slot.
        if limiter is not None:
            limiter.acquire()
        return client.fetch_center(slug, default_radius_miles)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="location") as pool:
        futures = {pool.submit(fetch_one, slug): slug for slug in slugs}
        for done, future in enumerate(as_completed(futures), start=1):
            slug = futures[future]
            try:
                outcome.centers.append(future.result())
            except CenterNotFound as error:
                outcome.failed[slug] = f"detail not found: {error}"
            except SkipRecord as error:
                outcome.skipped[slug] = str(error)
                logger.warning("Skipped center %r: %s", slug, error)
            except LocationApiError as error:
                outcome.failed[slug] = str(error)
                logger.warning("Detail fetch failed for %r: %s", slug, error)
            if on_progress is not None:
                on_progress(done, len(slugs))

    if limiter is not None and limiter.delayed_requests:
        logger.info(
            "The limit of %g detail requests per second delayed %d requests by %.1f s in total",
            requests_per_second,
            limiter.delayed_requests,
            limiter.delay_seconds,
        )

    # Results arrive in completion order; keep the slug API's order for stable output.
    position = {slug: index for index, slug in enumerate(slugs)}
    outcome.centers.sort(key=lambda center: position.get(center.slug, len(position)))
    return outcome
