"""Reads and writes of `batch_runs`, `batch_run_centers` and `sync_runs`."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

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


def running_batch_run_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        query = select(batch_runs.c.run_id).where(batch_runs.c.status == RunStatus.RUNNING.value)
        return list(connection.execute(query).scalars())


def get_batch_run(engine: Engine, run_id: str) -> dict | None:
    """The batch run document: the row plus its per-center results in finishing order."""
    with engine.connect() as connection:
        row = connection.execute(
            select(batch_runs).where(batch_runs.c.run_id == run_id)
        ).mappings().first()
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
        return document


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
        row = connection.execute(
            select(sync_runs).where(sync_runs.c.run_id == run_id)
        ).mappings().first()
        return dict(row) if row else None


def completed_slugs(engine: Engine, run_id: str, slugs: Sequence[str]) -> set[str]:
    """Slugs among `slugs` that already have a result in the given run."""
    with engine.connect() as connection:
        query = select(batch_run_centers.c.slug).where(batch_run_centers.c.run_id == run_id)
        return set(connection.execute(query).scalars()) & set(slugs)
