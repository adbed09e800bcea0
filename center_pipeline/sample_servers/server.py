"""Run the sample location and LLM servers on 127.0.0.1 in background threads.

`SampleServers` backs the no-API-key demo, the integration tests and the latency
benchmark. The pipeline reaches it over real HTTP with its production clients, pointed at
it by the variables that `SampleServers.env()` returns.
"""

from __future__ import annotations

import json
import logging
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from importlib import resources
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from center_pipeline.sample_servers.faults import FaultPlan, RequestCounter
from center_pipeline.sample_servers.llm_api import SAMPLE_MODEL, create_llm_app
from center_pipeline.sample_servers.location_api import (
    DATA_BASE_PATH,
    DEFAULT_PAGE_SIZE,
    SLUG_LIST_PATH,
    NetworkIndex,
    create_location_app,
)

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SAMPLE_LLM_API_KEY = "sample-key"
STARTUP_TIMEOUT_SECONDS = 10.0
# Seconds that in-flight requests get to finish when a server stops, before they are cut off.
SHUTDOWN_GRACE_SECONDS = 5

# Real city, state and ZIP code triples that `make_synthetic_network` cycles through.
SYNTHETIC_PLACES: tuple[tuple[str, str, str], ...] = (
    ("Austin", "TX", "78701"),
    ("Boston", "MA", "02130"),
    ("Chicago", "IL", "60614"),
    ("Dayton", "OH", "45402"),
    ("Seattle", "WA", "98125"),
    ("Denver", "CO", "80211"),
    ("Portland", "OR", "97214"),
    ("Atlanta", "GA", "30308"),
    ("Miami", "FL", "33131"),
    ("Minneapolis", "MN", "55408"),
    ("Tempe", "AZ", "85281"),
    ("Nashville", "TN", "37206"),
    ("Raleigh", "NC", "27608"),
    ("Salt Lake City", "UT", "84106"),
    ("San Diego", "CA", "92104"),
    ("Pittsburgh", "PA", "15217"),
    ("Kansas City", "MO", "64111"),
    ("New Orleans", "LA", "70115"),
    ("Madison", "WI", "53703"),
    ("Albuquerque", "NM", "87106"),
    ("Burlington", "VT", "05401"),
    ("Providence", "RI", "02903"),
    ("Omaha", "NE", "68102"),
    ("Boise", "ID", "83702"),
    ("Richmond", "VA", "23220"),
)


def load_sample_network() -> list[dict[str, Any]]:
    """Load the bundled network of 25 sample centers.

    Returns:
        Entries `{"slug": str, "detail": body}` as `create_location_app` takes them.
    """
    data_file = resources.files("center_pipeline.sample_servers") / "data" / "network.json"
    return json.loads(data_file.read_text(encoding="utf-8"))["centers"]


def make_synthetic_network(n: int) -> list[dict[str, Any]]:
    """Generate `n` active centers with flat detail bodies, for benchmarks.

    Slugs are `center-00000`, `center-00001` and so on, and the places cycle through
    `SYNTHETIC_PLACES`. City, state and ZIP strings are shared between centers. 50,000
    centers take about 50 MB (tracemalloc, CPython 3.11).

    Raises:
        ValueError: If `n` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be zero or more, got {n}")
    width = max(5, len(str(n - 1)))
    network = []
    for i in range(n):
        number = f"{i:0{width}d}"
        slug = f"center-{number}"
        city, state, zip_code = SYNTHETIC_PLACES[i % len(SYNTHETIC_PLACES)]
        detail = {
            "center_id": f"S-{number}",
            "slug": slug,
            "center_name": f"Sample Center {number}",
            "city": city,
            "state": state,
            "zip": zip_code,
            "owner_email": f"owner-{number}@example.com",
            "radius": 15,
            "is_active": True,
        }
        network.append({"slug": slug, "detail": detail})
    return network


class _BackgroundServer:
    """One uvicorn server on 127.0.0.1, run in a daemon thread."""

    def __init__(self, app: FastAPI, port: int, name: str) -> None:
        self._app = app
        self._requested_port = port
        self._name = name
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError(f"The {self._name} server is not running. Call start() first.")
        return self._socket.getsockname()[1]

    def start(self) -> None:
        """Bind the socket, start uvicorn and wait until it accepts connections.

        Raises:
            OSError: If the port cannot be bound, for example because it is in use.
            RuntimeError: If uvicorn exits or does not start within the timeout.
        """
        self._socket = _bind_loopback(self._requested_port)
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=self._name,
            daemon=True,
        )
        self._thread.start()

        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"The {self._name} server exited during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"The {self._name} server did not start within {STARTUP_TIMEOUT_SECONDS} s"
                )
            time.sleep(0.01)

    def request_stop(self) -> None:
        """Ask uvicorn to exit without waiting for it."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for its thread and close the socket."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=SHUTDOWN_GRACE_SECONDS + 5)
            if self._thread.is_alive():
                logger.warning("The %s server thread did not stop within the timeout", self._name)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None


def _bind_loopback(port: int) -> socket.socket:
    """Bind a TCP socket on 127.0.0.1. Port 0 lets the OS pick a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as error:
        sock.close()
        raise OSError(
            error.errno, f"Cannot bind {HOST}:{port}: {error.strerror}. Choose another port."
        ) from error
    return sock


class SampleServers:
    """The sample location API and the sample LLM API, served on 127.0.0.1.

    Use it as a context manager, or call `start()` and `stop()`. Faults and the network
    can be replaced while the servers run, and the request counters can be read from any
    thread.

    Args:
        network: Entries `{"slug": str, "detail": body}`, or None for the bundled network.
        location_faults: Faults of the location API, or None for no faults.
        llm_faults: Faults of the LLM API, or None for no faults.
        llm_script: Responses the LLM API replays in order instead of sample events.
        location_port: Port of the location API, or 0 to let the OS pick one.
        llm_port: Port of the LLM API, or 0 to let the OS pick one.
        slug_shape: Slug-list shape: "list", "object" or "paginated".
        page_size: Slugs per page when `slug_shape` is "paginated".
        location_api_key: When set, the location API rejects requests without this
            bearer token with 401.
        llm_api_key: When set, the LLM API rejects other keys with 401. By default it
            accepts any key, including `SAMPLE_LLM_API_KEY`.
    """

    def __init__(
        self,
        network: Sequence[dict[str, Any]] | None = None,
        location_faults: FaultPlan | None = None,
        llm_faults: FaultPlan | None = None,
        llm_script: list[dict[str, Any]] | None = None,
        location_port: int = 0,
        llm_port: int = 0,
        slug_shape: str = "list",
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        location_api_key: str | None = None,
        llm_api_key: str | None = None,
    ) -> None:
        self._location_app = create_location_app(
            network if network is not None else load_sample_network(),
            location_faults or FaultPlan(),
            slug_shape=slug_shape,
            page_size=page_size,
            api_key=location_api_key,
        )
        self._llm_app = create_llm_app(
            llm_faults or FaultPlan(), scripted=llm_script, api_key=llm_api_key
        )
        self._llm_api_key = llm_api_key or SAMPLE_LLM_API_KEY
        self._location_server = _BackgroundServer(
            self._location_app, location_port, "sample-location-api"
        )
        self._llm_server = _BackgroundServer(self._llm_app, llm_port, "sample-llm-api")

    def start(self) -> SampleServers:
        """Start both servers and return self once both accept connections."""
        self._location_server.start()
        try:
            self._llm_server.start()
        except BaseException:
            self._location_server.stop()
            raise
        logger.info(
            "Sample servers started: location API at %s, LLM API at %s",
            self.location_url,
            self.llm_base_url,
        )
        return self

    def stop(self) -> None:
        """Stop both servers. Calling it again does nothing."""
        self._llm_server.request_stop()
        self._location_server.request_stop()
        self._llm_server.stop()
        self._location_server.stop()
        logger.info("Sample servers stopped")

    def __enter__(self) -> SampleServers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def location_url(self) -> str:
        """Root URL of the location API."""
        return f"http://{HOST}:{self._location_server.port}"

    @property
    def slug_api_url(self) -> str:
        """URL of the slug list."""
        return self.location_url + SLUG_LIST_PATH

    @property
    def data_api_url(self) -> str:
        """Base URL of the data API. A detail is at `{data_api_url}/slug/{slug}`."""
        return self.location_url + DATA_BASE_PATH

    @property
    def llm_base_url(self) -> str:
        """OpenAI `base_url` of the LLM API, ending in /v1."""
        return f"http://{HOST}:{self._llm_server.port}/v1"

    @property
    def location_counter(self) -> RequestCounter:
        """Request counts of the location API (kinds "slugs" and "detail")."""
        return self._location_app.state.counter

    @property
    def llm_counter(self) -> RequestCounter:
        """Request counts of the LLM API (kind "llm")."""
        return self._llm_app.state.counter

    @property
    def location_faults(self) -> FaultPlan:
        """Faults of the location API. Assign a new plan to change them while serving."""
        return self._location_app.state.faults

    @location_faults.setter
    def location_faults(self, plan: FaultPlan) -> None:
        self._location_app.state.faults = plan

    @property
    def llm_faults(self) -> FaultPlan:
        """Faults of the LLM API. Assign a new plan to change them while serving."""
        return self._llm_app.state.faults

    @llm_faults.setter
    def llm_faults(self, plan: FaultPlan) -> None:
        self._llm_app.state.faults = plan

    def set_network(self, network: Sequence[dict[str, Any]]) -> None:
        """Replace the served network, for example to drop a center between two syncs."""
        self._location_app.state.network = NetworkIndex(network)

    def env(self) -> dict[str, str]:
        """Return the environment variables that point the pipeline at these servers."""
        return {
            "LOCATION_SLUG_API_URL": self.slug_api_url,
            "LOCATION_DATA_API_URL": self.data_api_url,
            "LLM_BASE_URL": self.llm_base_url,
            "LLM_API_KEY": self._llm_api_key,
            "LLM_MODEL": SAMPLE_MODEL,
            "LLM_PROVIDER": "openai",
            # The sample server charges nothing, so the batch's estimated cost is $0.
            "LLM_PRICES": json.dumps(
                {SAMPLE_MODEL: {"input_per_million": 0, "output_per_million": 0}}
            ),
        }


def serve_forever(
    location_port: int,
    llm_port: int,
    *,
    network: Sequence[dict[str, Any]] | None = None,
    slug_shape: str = "list",
    location_faults: FaultPlan | None = None,
    llm_faults: FaultPlan | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Start the sample servers, log their URLs and block until Ctrl-C or `stop_event`.

    The URLs and the `export` lines are logged at INFO level, so the caller must enable
    INFO logging to see them.

    Args:
        location_port: Port of the location API, or 0 to let the OS pick one.
        llm_port: Port of the LLM API, or 0 to let the OS pick one.
        network: Network to serve, or None for the bundled one.
        slug_shape: Slug-list shape: "list", "object" or "paginated".
        location_faults: Faults of the location API, or None for no faults.
        llm_faults: Faults of the LLM API, or None for no faults.
        stop_event: Event that stops the servers when set, for callers in other threads.
    """
    stop_event = stop_event or threading.Event()
    servers = SampleServers(
        network,
        location_faults=location_faults,
        llm_faults=llm_faults,
        location_port=location_port,
        llm_port=llm_port,
        slug_shape=slug_shape,
    )
    with servers:
        logger.info("Slug list: %s", servers.slug_api_url)
        logger.info("Center details: %s/slug/{slug}", servers.data_api_url)
        logger.info("LLM chat completions: %s/chat/completions", servers.llm_base_url)
        logger.info("LLM responses with web search: %s/responses", servers.llm_base_url)
        exports = "\n".join(
            f"export {name}={shlex.quote(value)}" for name, value in servers.env().items()
        )
        logger.info("To point the pipeline at these servers, run:\n%s", exports)
        logger.info("Press Ctrl-C to stop.")
        try:
            while not stop_event.wait(timeout=0.5):
                pass
        except KeyboardInterrupt:
            logger.info("Interrupted, so stopping the sample servers")
