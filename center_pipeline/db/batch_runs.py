"""Reads and writes of `batch_runs`, `batch_run_centers` and `sync_runs`."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from center_pipeline.db.tables import batch_run_centers, batch_runs, sync_runs


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class CenterResult:
    """How one center ended in a batch: `success` with N events, or `failed` with a reason."""

    slug: str
    status: str  # "success" or "failed"
    events_found: int = 0
    events_dropped: int = 0
    csv_path: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0
    # None when the model has no price. A center that made no LLM call costs 0.0.
    cost_usd: float | None = 0.0
    dropped_unsourced: int = 0
    # The batch run whose LLM call produced a success carried over into this run.
    carried_over_from: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "success"


def start_batch_run(
    engine: Engine, run_id: str, run_date: date, total_centers: int, now: datetime
) -> None:
    """Record a batch as running; a re-execution of the same run starts its counts again."""
    with engine.begin() as connection:
        connection.execute(batch_run_centers.delete().where(batch_run_centers.c.run_id == run_id))
        connection.execute(batch_runs.delete().where(batch_runs.c.run_id == run_id))
        connection.execute(
            batch_runs.insert().values(
                run_id=run_id,
                status=RunStatus.RUNNING.value,
                run_date=run_date,
                total_centers=total_centers,
                processed_centers=0,
                successful_centers=0,
                failed_centers=0,
                started_at=now,
                heartbeat_at=now,
            )
        )


def record_center_result(engine: Engine, run_id: str, result: CenterResult, now: datetime) -> None:
    """Store one center's result and bump the run's counters in the same transaction."""
    succeeded = 1 if result.succeeded else 0
    with engine.begin() as connection:
        connection.execute(
            batch_run_centers.insert().values(
                run_id=run_id,
                slug=result.slug,
                status=result.status,
                events_found=result.events_found,
                events_dropped=result.events_dropped,
                csv_path=result.csv_path,
                error=result.error,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                tool_calls=result.tool_calls,
                cost_usd=result.cost_usd,
                dropped_unsourced=result.dropped_unsourced,
                carried_over_from=result.carried_over_from,
                finished_at=now,
            )
        )
        connection.execute(
            update(batch_runs)
            .where(batch_runs.c.run_id == run_id)
            .values(
                processed_centers=batch_runs.c.processed_centers + 1,
                successful_centers=batch_runs.c.successful_centers + succeeded,
                failed_centers=batch_runs.c.failed_centers + (1 - succeeded),
            )
        )


def finish_batch_run(
    engine: Engine, run_id: str, status: RunStatus, now: datetime, error: str | None = None
) -> None:
    """Set the final status of a batch run unless it already has one."""
    with engine.begin() as connection:
        connection.execute(
            update(batch_runs)
            .where(batch_runs.c.run_id == run_id, batch_runs.c.status == RunStatus.RUNNING.value)
            .values(status=status.value, completed_at=now, error=error)
        )


def record_heartbeat(engine: Engine, run_id: str, now: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(batch_runs).where(batch_runs.c.run_id == run_id).values(heartbeat_at=now)
        )


def running_batch_runs(engine: Engine) -> list[tuple[str, datetime | None]]:
    """Run ids and last heartbeats (UTC) of the batch rows still marked running."""
    with engine.connect() as connection:
        query = select(batch_runs.c.run_id, batch_runs.c.heartbeat_at).where(
            batch_runs.c.status == RunStatus.RUNNING.value
        )
        return [(run_id, _as_utc(beat)) for run_id, beat in connection.execute(query)]


def successful_results(
    engine: Engine,
    run_ids: Sequence[str] | None,
    run_date: date,
    exclude_run_id: str | None = None,
) -> dict[str, CenterResult]:
    """Return the latest successful result per slug of one run date, among the given runs.

    With `run_ids` None, the results of every batch run count except `exclude_run_id`.
    Each result's `carried_over_from` names the run whose LLM call produced it.
    """
    if run_ids is not None and not run_ids:
        return {}
    conditions = [batch_run_centers.c.status == "success", batch_runs.c.run_date == run_date]
    if run_ids is not None:
        conditions.append(batch_run_centers.c.run_id.in_(list(run_ids)))
    if exclude_run_id is not None:
        conditions.append(batch_run_centers.c.run_id != exclude_run_id)
    query = (
        select(batch_run_centers)
        .join(batch_runs, batch_runs.c.run_id == batch_run_centers.c.run_id)
        .where(*conditions)
        .order_by(batch_run_centers.c.finished_at)
    )
    fields = [name for name in CenterResult.__dataclass_fields__]
    results = {}
    with engine.connect() as connection:
        for row in connection.execute(query).mappings():
            values = {name: row[name] for name in fields}
            values["carried_over_from"] = row["carried_over_from"] or row["run_id"]
            results[row["slug"]] = CenterResult(**values)
    return results


def get_batch_run(engine: Engine, run_id: str) -> dict | None:
    """The batch run document: the row plus its per-center results in finishing order."""
    with engine.connect() as connection:
        row = (
            connection.execute(select(batch_runs).where(batch_runs.c.run_id == run_id))
            .mappings()
            .first()
        )
        if row is None:
            return None
        results = connection.execute(
            select(batch_run_centers)
            .where(batch_run_centers.c.run_id == run_id)
            .order_by(batch_run_centers.c.id)
        ).mappings()
        document = dict(row)
        document["results"] = [
            {key: value for key, value in result.items() if key not in ("id", "run_id")}
            for result in results
        ]
        document["totals"] = batch_totals(document["results"])
        return document


def batch_totals(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the tokens, tool calls, cost and unsourced events of a run's center results.

    `cost_usd` is None when a center that used tokens or tools has no price, and
    `unpriced_centers` counts those centers. Carried-over centers add nothing, because
    this run made no LLM call for them.
    """
    unpriced = [
        result
        for result in results
        if result["cost_usd"] is None
        and (result["prompt_tokens"] or result["completion_tokens"] or result["tool_calls"])
    ]
    cost = sum(result["cost_usd"] or 0.0 for result in results)
    return {
        "prompt_tokens": sum(result["prompt_tokens"] for result in results),
        "completion_tokens": sum(result["completion_tokens"] for result in results),
        "tool_calls": sum(result["tool_calls"] for result in results),
        "cost_usd": None if unpriced else round(cost, 6),
        "unpriced_centers": len(unpriced),
        "dropped_unsourced": sum(result["dropped_unsourced"] for result in results),
        "carried_over_centers": sum(1 for result in results if result["carried_over_from"]),
    }


def batch_token_totals(engine: Engine, run_id: str) -> tuple[int, int]:
    """Prompt and completion tokens summed over the run's centers."""
    with engine.connect() as connection:
        totals = connection.execute(
            select(
                func.coalesce(func.sum(batch_run_centers.c.prompt_tokens), 0),
                func.coalesce(func.sum(batch_run_centers.c.completion_tokens), 0),
            ).where(batch_run_centers.c.run_id == run_id)
        ).one()
        return int(totals[0]), int(totals[1])


def record_sync_run(engine: Engine, run_id: str, values: dict) -> None:
    """Insert or replace the outcome row of one sync run."""
    dialect = engine.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(sync_runs).values(run_id=run_id, **values)
    statement = statement.on_conflict_do_update(index_elements=["run_id"], set_=values)
    with engine.begin() as connection:
        connection.execute(statement)


def get_sync_run(engine: Engine, run_id: str) -> dict | None:
    with engine.connect() as connection:
        row = (
            connection.execute(select(sync_runs).where(sync_runs.c.run_id == run_id))
            .mappings()
            .first()
        )
        return dict(row) if row else None


def _as_utc(moment: datetime | None) -> datetime | None:
    # SQLite drops the time zone that was stored; every timestamp here is written in UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
