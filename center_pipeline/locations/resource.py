"""Dagster resource for the network's location APIs."""

from contextlib import contextmanager
from collections.abc import Iterator

from dagster import ConfigurableResource

from center_pipeline.config import LocationSettings, load_settings
from center_pipeline.locations.client import LocationApiClient


class LocationApiResource(ConfigurableResource):
    """Opens clients for the slug and data APIs.

    The URLs and limits are read from the environment when a run needs them; only the
    optional bearer token lives on the resource, set through EnvVar so the UI hides it.
    """

    api_key: str | None = None

    def settings(self) -> LocationSettings:
        return load_settings(LocationSettings)

    @contextmanager
    def open_client(self, settings: LocationSettings) -> Iterator[LocationApiClient]:
        client = LocationApiClient(
            settings.location_slug_api_url,
            settings.location_data_api_url,
            api_key=self.api_key or None,
            timeout_seconds=settings.location_api_timeout_seconds,
        )
        with client:
            yield client
