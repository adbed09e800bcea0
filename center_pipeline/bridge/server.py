"""Serves the bridge with uvicorn, after checking the address against the token setting."""

import logging

import uvicorn

from center_pipeline.bridge.app import create_app
from center_pipeline.bridge.security import check_bind_host, check_token
from center_pipeline.config import BridgeSettings, DatabaseSettings, load_settings
from center_pipeline.db.engine import create_database_engine
from center_pipeline.runner import open_instance

logger = logging.getLogger(__name__)


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the bridge until Ctrl-C; host and port default to BRIDGE_HOST and BRIDGE_PORT.

    Raises:
        ConfigError: no token is set and the host is not 127.0.0.1, DAGSTER_HOME is not
            set, or a setting is invalid.
        DatabaseUnavailable: the application database cannot be reached.
    """
    settings = load_settings(BridgeSettings)
    host = host or settings.bridge_host
    port = port or settings.bridge_port
    secret = settings.bridge_api_token
    token = secret.get_secret_value() if secret is not None else None
    check_token(token)
    check_bind_host(host, token)
    # The app opens both again at startup. Opening them here first turns a missing
    # DAGSTER_HOME or an unreachable database into a one-line error, not a traceback.
    open_instance().dispose()
    create_database_engine(load_settings(DatabaseSettings).database_url).dispose()

    if token is None:
        logger.warning(
            "BRIDGE_API_TOKEN is not set, so the bridge accepts requests without a token and "
            "listens on %s only",
            host,
        )
    app = create_app(settings)
    logger.info("Starting the bridge on http://%s:%d; the API description is at /docs", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
