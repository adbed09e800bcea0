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
from center_pipeline.events.llm_client import (
    EventsLlmClient,
    LlmAuthError,
    LlmError,
    events_from_answer,
)
from center_pipeline.events.models import Event
from center_pipeline.events.prompt import render_prompt
from center_pipeline.locations.models import Center

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


@dataclass(frozen=True)
class CenterOutcome:
    """A center's result plus the first events found, for the run's preview."""

    result: CenterResult
    preview: tuple[Event, ...] = ()


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
    center: Center, client: EventsLlmClient, options: BatchOptions
) -> CenterOutcome:
    """Ask the LLM for one center's events and write its CSV.

    Raises the LLM client's errors; `run_batch` turns them into a failed result. The CSV is
    written only on success, so a failure keeps the center's earlier file.
    """
    system_prompt, user_prompt = render_prompt(
        center_name=center.center_name,
        city=center.city,
        state=center.state,
        zip=center.zip,
        radius_miles=center.radius_miles,
        today=options.run_date,
        window_days=options.window_days,
    )
    answer = client.complete(user_prompt, system_prompt)
    parsed = events_from_answer(answer, options.run_date, options.window_days)

    path = csv_path_for(options.output_dir, center.slug, options.run_date)
    rows = write_events_csv(path, parsed.events)
    dropped = parsed.dropped_out_of_window + parsed.dropped_invalid
    result = CenterResult(
        slug=center.slug,
        status="success",
        events_found=rows,
        events_dropped=dropped,
        csv_path=str(path),
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
    )
    return CenterOutcome(result=result, preview=tuple(parsed.events[:PREVIEW_ROWS]))


def run_batch(
    centers: Sequence[Center],
    client: EventsLlmClient,
    options: BatchOptions,
    on_result: Callable[[CenterOutcome], None],
) -> None:
    """Process every center, `options.concurrency` at a time, calling `on_result` as each ends.

    `on_result` runs in the calling thread, so it may write to a database that allows one
    writer at a time. One center's failure never stops the others.
    """
    circuit = _AuthCircuit()

    def process(center: Center) -> CenterOutcome:
        if circuit.reason is not None:
            return _failed(center, f"not attempted: {circuit.reason}")
        try:
            outcome = find_center_events(center, client, options)
        except LlmAuthError as error:
            circuit.record(error)
            return _failed(center, str(error))
        except LlmError as error:
            return _failed(center, str(error))
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
            center = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - one center's bug must not end the batch
                logger.exception("Unexpected error for center %r", center.slug)
                outcome = _failed(center, f"unexpected error: {type(error).__name__}: {error}")
            on_result(outcome)


def _failed(center: Center, reason: str) -> CenterOutcome:
    return CenterOutcome(result=CenterResult(slug=center.slug, status="failed", error=reason))
