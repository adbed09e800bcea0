"""One batch of event lookups: each center's LLM call, parse and CSV, several at a time."""

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from center_pipeline.db.batch_runs import CenterResult
from center_pipeline.events.csv_output import csv_path_for, write_events_csv
from center_pipeline.events.grounded import GroundedEventsClient, events_from_grounded_answer
from center_pipeline.events.llm_client import (
    EventsLlmClient,
    LlmAnswerError,
    LlmAuthError,
    LlmError,
    events_from_answer,
)
from center_pipeline.events.models import Event
from center_pipeline.events.pricing import CallUsage, ModelPrice, cost_or_none
from center_pipeline.events.prompt import render_prompt
from center_pipeline.locations.models import Center
from center_pipeline.ratelimit import rate_limiter_or_none

logger = logging.getLogger(__name__)

# After this many authentication failures with no success between them, the key is taken
# as invalid and the centers still waiting fail without a call.
MAX_CONSECUTIVE_AUTH_FAILURES = 3
PREVIEW_ROWS = 5


@dataclass(frozen=True)
class BatchOptions:
    run_date: date
    window_days: int
    output_dir: Path
    concurrency: int
    # LLM calls started per minute across all threads, or None for no limit.
    requests_per_minute: float | None = None
    # Price of the batch's model, or None when it has none and costs are unknown.
    price: ModelPrice | None = None


@dataclass(frozen=True)
class CenterOutcome:
    """A center's result plus the first events found, for the run's preview."""

    result: CenterResult
    preview: tuple[Event, ...] = ()


@dataclass(frozen=True)
class _FoundEvents:
    """The events of one answer, what was dropped, and what the call consumed."""

    events: tuple[Event, ...]
    dropped: int
    dropped_unsourced: int
    usage: CallUsage


class _AuthCircuit:
    """Counts consecutive authentication failures across worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consecutive = 0
        self.reason: str | None = None

    def record(self, error: LlmAuthError | None) -> None:
        with self._lock:
            if error is None:
                self._consecutive = 0
                return
            self._consecutive += 1
            if self._consecutive >= MAX_CONSECUTIVE_AUTH_FAILURES and self.reason is None:
                self.reason = str(error)
                logger.error(
                    "The LLM API rejected the key %d times in a row; failing the remaining "
                    "centers without further calls: %s",
                    self._consecutive,
                    error,
                )


def find_center_events(
    center: Center, client: EventsLlmClient | GroundedEventsClient, options: BatchOptions
) -> CenterOutcome:
    """Ask the LLM for one center's events and write its CSV.

    A `GroundedEventsClient` searches the web and keeps only cited events, and an
    `EventsLlmClient` sends the prompt through chat completions. Raises the LLM client's errors, with
    the usage of an answer that arrived but could not be used; `run_batch` turns them into
    a failed result. The CSV is written only on success, so a failure keeps the center's
    earlier file.
    """
    system_prompt, user_prompt = render_prompt(
        center_name=center.center_name,
        city=center.city,
        state=center.state,
        zip=center.zip,
        radius_miles=center.radius_miles,
        today=options.run_date,
        window_days=options.window_days,
        web_search=isinstance(client, GroundedEventsClient),
    )
    if isinstance(client, GroundedEventsClient):
        found = _grounded_events(client, user_prompt, system_prompt, options)
    else:
        found = _chat_events(client, user_prompt, system_prompt, options)

    path = csv_path_for(options.output_dir, center.slug, options.run_date)
    rows = write_events_csv(path, found.events)
    result = CenterResult(
        slug=center.slug,
        status="success",
        events_found=rows,
        events_dropped=found.dropped,
        csv_path=str(path),
        prompt_tokens=found.usage.input_tokens,
        completion_tokens=found.usage.output_tokens,
        tool_calls=found.usage.tool_calls,
        cost_usd=cost_or_none(options.price, found.usage),
        dropped_unsourced=found.dropped_unsourced,
    )
    return CenterOutcome(result=result, preview=tuple(found.events[:PREVIEW_ROWS]))


def _chat_events(
    client: EventsLlmClient, user_prompt: str, system_prompt: str, options: BatchOptions
) -> _FoundEvents:
    answer = client.complete(user_prompt, system_prompt)
    try:
        parsed = events_from_answer(answer, options.run_date, options.window_days)
    except LlmAnswerError as error:
        error.usage = answer.usage
        raise
    # No provider cited anything on this path, so a source_url the model wrote is removed.
    events = tuple(event.model_copy(update={"source_url": None}) for event in parsed.events)
    return _FoundEvents(events, parsed.dropped, dropped_unsourced=0, usage=answer.usage)


def _grounded_events(
    client: GroundedEventsClient, user_prompt: str, system_prompt: str, options: BatchOptions
) -> _FoundEvents:
    answer = client.search(user_prompt, system_prompt)
    sourced = events_from_grounded_answer(answer, options.run_date, options.window_days)
    return _FoundEvents(
        sourced.events, sourced.dropped, sourced.dropped_unsourced, usage=answer.usage
    )


def run_batch(
    centers: Sequence[Center],
    client: EventsLlmClient | GroundedEventsClient,
    options: BatchOptions,
    on_result: Callable[[CenterOutcome], None],
) -> None:
    """Process every center, `options.concurrency` at a time, calling `on_result` as each ends.

    `on_result` runs in the calling thread, so it may write to a database that allows one
    writer at a time. One center's failure never stops the others. With
    `options.requests_per_minute`, LLM calls also start at most that often.
    """
    circuit = _AuthCircuit()
    rate = options.requests_per_minute
    limiter = rate_limiter_or_none(rate / 60 if rate is not None else None)

    def process(center: Center) -> CenterOutcome:
        if circuit.reason is not None:
            return _failed(center, f"not attempted: {circuit.reason}")
        # NOTE: the limit spaces each center's first LLM request. The client's retries wait
        # for their backoff or the server's Retry-After instead of a limiter slot.
        if limiter is not None:
            limiter.acquire()
        try:
            outcome = find_center_events(center, client, options)
        except LlmAuthError as error:
            circuit.record(error)
            return _failed(center, str(error))
        except LlmError as error:
            return _failed(center, str(error), error.usage, options.price)
        except OSError as error:
            logger.exception("Writing the CSV for %r failed", center.slug)
            return _failed(center, f"could not write the CSV: {error}")
        except ValueError as error:
            # render_prompt and csv_path_for reject centers they cannot use safely.
            logger.warning("Center %r cannot be processed: %s", center.slug, error)
            return _failed(center, f"invalid center data: {error}")
        circuit.record(None)
        return outcome

    with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="llm") as pool:
        futures = {pool.submit(process, center): center for center in centers}
        for future in as_completed(futures):
            # Dropping the finished future frees its outcome and preview events once
            # on_result has run, so memory does not grow with the number of centers.
            center = futures.pop(future)
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - one center's bug must not end the batch
                logger.exception("Unexpected error for center %r", center.slug)
                outcome = _failed(center, f"unexpected error: {type(error).__name__}: {error}")
            on_result(outcome)

    if limiter is not None and limiter.delayed_requests:
        logger.info(
            "The limit of %g LLM requests per minute delayed %d requests by %.1f s in total",
            rate,
            limiter.delayed_requests,
            limiter.delay_seconds,
        )


def _failed(
    center: Center,
    reason: str,
    usage: CallUsage | None = None,
    price: ModelPrice | None = None,
) -> CenterOutcome:
    """A failed result, with the tokens and cost of an answer that arrived but was unusable."""
    usage = usage or CallUsage()
    result = CenterResult(
        slug=center.slug,
        status="failed",
        error=reason,
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        tool_calls=usage.tool_calls,
        cost_usd=cost_or_none(price, usage),
    )
    return CenterOutcome(result=result)
