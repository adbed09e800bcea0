"""Reads and writes of the `bridge_requests` table."""

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from center_pipeline.db.tables import bridge_requests


class RequestKind(StrEnum):
    """The endpoint a request came from; each one launches one job."""

    SYNC_CENTERS = "sync-centers"
    RUN_BATCH = "run-batch"
    SYNC_AND_RUN = "sync-and-run"


class RequestStatus(StrEnum):
    PENDING = "pending"
    LAUNCHED = "launched"
    REJECTED = "rejected"


class IdempotencyKeyReused(Exception):
    """Raised when an Idempotency-Key comes back with a different endpoint or body."""

    def __init__(self, key: str, request_id: str):
        super().__init__(
            f"Idempotency-Key {key!r} was already used by request {request_id} with a different "
            "endpoint or body. Send a new key for a new request."
        )
        self.request_id = request_id


@dataclass(frozen=True)
class BridgeRequest:
    """One row of `bridge_requests`."""

    request_id: str
    kind: RequestKind
    idempotency_key: str | None
    fingerprint: str
    slugs: list[str] | None
    run_date: date | None
    status: RequestStatus
    partition_ranges: list[tuple[str, str]] | None
    run_ids: list[str] | None
    error: str | None
    created_at: datetime
    launched_at: datetime | None


def request_fingerprint(
    kind: RequestKind, slugs: Sequence[str] | None, run_date: date | None
) -> str:
    """Hash what the request selects with SHA-256; slug order and duplicates do not count."""
    canonical = {
        "kind": kind.value,
        "slugs": sorted(set(slugs)) if slugs is not None else None,
        "run_date": run_date.isoformat() if run_date else None,
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def create_request(
    engine: Engine,
    kind: RequestKind,
    slugs: Sequence[str] | None,
    run_date: date | None,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[BridgeRequest, bool]:
    """Insert a pending request, or fetch the earlier one with the same idempotency key.

    Concurrent calls with one key insert one row: the unique constraint turns the losers'
    inserts into no-ops, and each caller then reads the winner's row.

    Returns:
        The request and True when this call created it.

    Raises:
        IdempotencyKeyReused: the key belongs to a request for something else.
    """
    fingerprint = request_fingerprint(kind, slugs, run_date)
    values = {
        "request_id": str(uuid.uuid4()),
        "kind": kind.value,
        "idempotency_key": idempotency_key,
        "fingerprint": fingerprint,
        "run_date": run_date,
        "status": RequestStatus.PENDING.value,
        "created_at": now,
    }
    if slugs is not None:
        values["slugs"] = list(slugs)

    if idempotency_key is None:
        with engine.begin() as connection:
            connection.execute(bridge_requests.insert().values(**values))
        return _require(get_request(engine, values["request_id"])), True

    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(bridge_requests)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )
    # The insert runs in its own transaction before any read, so SQLite takes the write lock
    # first and waits for it (busy timeout) instead of failing to upgrade a read lock.
    with engine.begin() as connection:
        connection.execute(statement)
    stored = _require(get_request_by_idempotency_key(engine, idempotency_key))
    if stored.fingerprint != fingerprint:
        raise IdempotencyKeyReused(idempotency_key, stored.request_id)
    return stored, stored.request_id == values["request_id"]


def get_request(engine: Engine, request_id: str) -> BridgeRequest | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(bridge_requests).where(bridge_requests.c.request_id == request_id)
        ).mappings().first()
    return _from_row(row) if row else None


def get_request_by_idempotency_key(engine: Engine, key: str) -> BridgeRequest | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(bridge_requests).where(bridge_requests.c.idempotency_key == key)
        ).mappings().first()
    return _from_row(row) if row else None


def pending_requests(engine: Engine, limit: int) -> list[BridgeRequest]:
    """Pending requests, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(bridge_requests)
            .where(bridge_requests.c.status == RequestStatus.PENDING.value)
            .order_by(bridge_requests.c.created_at, bridge_requests.c.request_id)
            .limit(limit)
        ).mappings()
        return [_from_row(row) for row in rows]


def count_pending_requests(engine: Engine) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(bridge_requests).where(
            bridge_requests.c.status == RequestStatus.PENDING.value
        )
        return connection.execute(query).scalar_one()


def set_partition_ranges(
    engine: Engine, request_id: str, ranges: Sequence[tuple[str, str]]
) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(bridge_requests)
            .where(bridge_requests.c.request_id == request_id)
            .values(partition_ranges=[list(pair) for pair in ranges])
        )


def mark_launched(engine: Engine, request_id: str, run_ids: Sequence[str], now: datetime) -> None:
    _finish(engine, request_id, RequestStatus.LAUNCHED, now, run_ids=list(run_ids))


def mark_rejected(engine: Engine, request_id: str, error: str, now: datetime) -> None:
    _finish(engine, request_id, RequestStatus.REJECTED, now, error=error)


def _finish(
    engine: Engine, request_id: str, status: RequestStatus, now: datetime, **values
) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(bridge_requests)
            .where(
                bridge_requests.c.request_id == request_id,
                bridge_requests.c.status == RequestStatus.PENDING.value,
            )
            .values(status=status.value, launched_at=now, **values)
        )


def _require(request: BridgeRequest | None) -> BridgeRequest:
    if request is None:
        raise RuntimeError("A bridge request vanished right after it was written")
    return request


def _from_row(row) -> BridgeRequest:
    ranges = row["partition_ranges"]
    return BridgeRequest(
        request_id=row["request_id"],
        kind=RequestKind(row["kind"]),
        idempotency_key=row["idempotency_key"],
        fingerprint=row["fingerprint"],
        slugs=row["slugs"],
        run_date=row["run_date"],
        status=RequestStatus(row["status"]),
        partition_ranges=[(first, last) for first, last in ranges] if ranges is not None else None,
        run_ids=row["run_ids"],
        error=row["error"],
        created_at=row["created_at"],
        launched_at=row["launched_at"],
    )
