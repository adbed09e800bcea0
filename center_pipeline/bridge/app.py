"""The FastAPI app of the REST bridge.

The POST endpoints only record a request in `bridge_requests` and respond with 202. The
`bridge_requests` sensor in the Dagster daemon launches its runs. The GET endpoints read the
application database and the Dagster instance in DAGSTER_HOME.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from importlib.metadata import version
from typing import Annotated

from dagster import DagsterInstance
from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine

from center_pipeline.bridge.cron_status import cron_status_document
from center_pipeline.bridge.models import (
    CronStatus,
    ErrorMessage,
    LaunchAccepted,
    RunBatchBody,
    StatusDocument,
    SyncAndRunBody,
    SyncCentersBody,
)
from center_pipeline.bridge.planning import NoCenters, SlugsRejected, check_slugs
from center_pipeline.bridge.security import BodySizeLimit, access_check, check_token
from center_pipeline.bridge.store import (
    BridgeRequest,
    IdempotencyKeyReused,
    RequestKind,
    create_request,
    get_request_by_idempotency_key,
    request_fingerprint,
)
from center_pipeline.config import BridgeSettings, DatabaseSettings, load_settings
from center_pipeline.db.engine import create_database_engine, describe_url
from center_pipeline.partitions import center_partitions
from center_pipeline.runner import open_instance
from center_pipeline.status import run_status_document

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Start the center_pipeline jobs over HTTP and follow them.

Each POST records a request and responds with 202 and its id. The `bridge_requests` sensor
of the Dagster daemon launches the request's runs within its tick interval, once per
request, because each run's run key is derived from the request id. Follow the request at
`GET /events/status/{request_id}`, and its runs in the Dagster UI.

When the bridge has a token (BRIDGE_API_TOKEN), every endpoint except this description needs
`Authorization: Bearer <token>`.
"""

_ERRORS = {
    401: {"model": ErrorMessage, "description": "Missing or invalid bearer token."},
    413: {"model": ErrorMessage, "description": "Request body over BRIDGE_MAX_BODY_BYTES."},
}
_POST_ERRORS = {
    **_ERRORS,
    422: {
        "model": ErrorMessage,
        "description": "Invalid body or header, or an Idempotency-Key reused for another request.",
    },
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeating a request with the same key returns the first request, "
        "launched once.",
    ),
]


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _instance(request: Request) -> DagsterInstance:
    return request.app.state.instance


EngineDependency = Annotated[Engine, Depends(_engine)]
InstanceDependency = Annotated[DagsterInstance, Depends(_instance)]

router = APIRouter()


@router.post(
    "/cron/sync-centers",
    tags=["launch"],
    status_code=202,
    response_model=LaunchAccepted,
    responses=_POST_ERRORS,
    summary="Launch a sync_centers run",
)
def post_sync_centers(
    request: Request,
    engine: EngineDependency,
    instance: InstanceDependency,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[SyncCentersBody | None, Body()] = None,
) -> JSONResponse:
    # The body has no fields; declaring it makes FastAPI reject unknown ones with 422.
    return _accept(request, engine, instance, RequestKind.SYNC_CENTERS, idempotency_key)


@router.post(
    "/cron/run-batch",
    tags=["launch"],
    status_code=202,
    response_model=LaunchAccepted,
    responses={
        **_POST_ERRORS,
        409: {"model": ErrorMessage, "description": "No active center has a partition yet."},
        422: {
            "model": ErrorMessage,
            "description": "Invalid body or header, an Idempotency-Key reused for another "
            "request, or slugs that are unknown, inactive or have no partition (each named).",
        },
    },
    summary="Launch run_batch over the given centers, or over every active center",
)
def post_run_batch(
    request: Request,
    engine: EngineDependency,
    instance: InstanceDependency,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[RunBatchBody | None, Body()] = None,
) -> JSONResponse:
    body = body or RunBatchBody()
    return _accept(
        request,
        engine,
        instance,
        RequestKind.RUN_BATCH,
        idempotency_key,
        slugs=body.slugs,
        run_date=body.run_date,
    )


@router.post(
    "/cron/sync-and-run",
    tags=["launch"],
    status_code=202,
    response_model=LaunchAccepted,
    responses=_POST_ERRORS,
    summary="Launch sync_and_run; run_batch over every active center follows a good sync",
)
def post_sync_and_run(
    request: Request,
    engine: EngineDependency,
    instance: InstanceDependency,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[SyncAndRunBody | None, Body()] = None,
) -> JSONResponse:
    # The body has no fields; declaring it makes FastAPI reject unknown ones with 422.
    return _accept(request, engine, instance, RequestKind.SYNC_AND_RUN, idempotency_key)


@router.get(
    "/cron/status",
    tags=["status"],
    response_model=CronStatus,
    responses=_ERRORS,
    summary="The schedule, the daemon's heartbeat and the requests not launched yet",
)
def get_cron_status(engine: EngineDependency, instance: InstanceDependency) -> dict:
    return cron_status_document(engine, instance, datetime.now(UTC))


@router.get(
    "/events/status/{run_id}",
    tags=["status"],
    name="event_status",
    response_model=StatusDocument,
    responses={**_ERRORS, 404: {"model": ErrorMessage, "description": "Unknown id."}},
    summary="The status document of a Dagster run or a bridge request",
)
def get_event_status(
    run_id: Annotated[
        str,
        Path(min_length=1, max_length=128, description="A Dagster run id or a bridge request id"),
    ],
    engine: EngineDependency,
    instance: InstanceDependency,
) -> JSONResponse:
    document = run_status_document(engine, run_id, instance)
    if document is None:
        raise HTTPException(status_code=404, detail=f"No run or bridge request with id {run_id!r}.")
    # The CLI prints this same document, so it is sent as built, not re-serialized.
    return JSONResponse(document)


def _accept(
    request: Request,
    engine: Engine,
    instance: DagsterInstance,
    kind: RequestKind,
    idempotency_key: str | None,
    slugs: list[str] | None = None,
    run_date: date | None = None,
) -> JSONResponse:
    """Record the request, or find the earlier one with the same key, and respond with 202."""
    if idempotency_key is not None:
        earlier = get_request_by_idempotency_key(engine, idempotency_key)
        if earlier is not None:
            if earlier.fingerprint != request_fingerprint(kind, slugs, run_date):
                error = IdempotencyKeyReused(idempotency_key, earlier.request_id)
                raise HTTPException(status_code=422, detail=str(error))
            return _accepted(request, engine, instance, earlier, replayed=True)

    if kind is RequestKind.RUN_BATCH:
        _check_batch_targets(engine, instance, slugs)
        slugs = list(dict.fromkeys(slugs)) if slugs is not None else None
    try:
        stored, created = create_request(
            engine, kind, slugs, run_date, idempotency_key, datetime.now(UTC)
        )
    except IdempotencyKeyReused as error:
        raise HTTPException(status_code=422, detail=str(error)) from None

    if created:
        logger.info(
            "Accepted %s request %s%s",
            kind.value,
            stored.request_id,
            f" for {len(slugs)} centers" if slugs is not None else "",
        )
    return _accepted(request, engine, instance, stored, replayed=not created)


def _check_batch_targets(
    engine: Engine, instance: DagsterInstance, slugs: list[str] | None
) -> None:
    if slugs is None:
        if not instance.get_dynamic_partitions(center_partitions.name):
            raise HTTPException(status_code=409, detail=str(NoCenters()))
        return
    try:
        check_slugs(engine, instance, slugs)
    except SlugsRejected as error:
        raise HTTPException(
            status_code=422, detail={"message": str(error), "slugs": error.problems}
        ) from None


def _accepted(
    request: Request,
    engine: Engine,
    instance: DagsterInstance,
    stored: BridgeRequest,
    replayed: bool,
) -> JSONResponse:
    document = run_status_document(engine, stored.request_id, instance) or {}
    status_url = str(request.url_for("event_status", run_id=stored.request_id))
    accepted = LaunchAccepted(
        request_id=stored.request_id,
        request_kind=stored.kind.value,
        status=document.get("status", "pending"),
        run_ids=document.get("run_ids", []),
        status_url=status_url,
        created_at=stored.created_at,
        replayed=replayed,
    )
    return JSONResponse(
        accepted.model_dump(mode="json"), status_code=202, headers={"Location": status_url}
    )


def create_app(settings: BridgeSettings | None = None) -> FastAPI:
    """Build the bridge app; it opens the database and the Dagster instance at startup.

    Raises:
        ConfigError: BRIDGE_API_TOKEN is set but too short, or a setting is invalid.
    """
    settings = settings or load_settings(BridgeSettings)
    secret = settings.bridge_api_token
    token = secret.get_secret_value() if secret is not None else None
    check_token(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database_url = load_settings(DatabaseSettings).database_url
        app.state.engine = create_database_engine(database_url)
        app.state.instance = open_instance()
        logger.info(
            "The bridge uses the database %s and the Dagster instance in %s",
            describe_url(database_url),
            app.state.instance.root_directory,
        )
        try:
            yield
        finally:
            app.state.instance.dispose()
            app.state.engine.dispose()

    # FastAPIOffline serves /docs and /redoc with bundled assets instead of a CDN's.
    app = FastAPIOffline(
        title="center_pipeline REST bridge",
        version=version("center_pipeline"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.include_router(router, dependencies=[Depends(access_check(token))])
    app.add_middleware(BodySizeLimit, max_bytes=settings.bridge_max_body_bytes)
    return app
