"""Dagster resource for the OpenAI-compatible LLM that finds events."""

from dagster import ConfigurableResource

from center_pipeline.config import ConfigError, LlmSettings, load_settings
from center_pipeline.events.grounded import GroundedEventsClient
from center_pipeline.events.llm_client import EventsLlmClient

API_KEY_VARIABLES = ("LLM_API_KEY", "OPENAI_API_KEY", "XAI_API_KEY")
# The provider's own key variable, read when LLM_API_KEY is not set.
PROVIDER_KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "grok": "XAI_API_KEY"}


def llm_key_variables(provider: str) -> tuple[str, str]:
    """Name the variables that hold the LLM API key for `provider`, in the order read."""
    return ("LLM_API_KEY", PROVIDER_KEY_VARIABLES.get(provider, "OPENAI_API_KEY"))


def missing_api_key_error(provider: str) -> ConfigError:
    """Build the error for a missing LLM API key, naming the variables to set."""
    fallback = llm_key_variables(provider)[1]
    return ConfigError(
        f"Invalid configuration: LLM_API_KEY is not set (nor {fallback}). "
        "Example: LLM_API_KEY=sk-... (for the sample servers any value works, "
        "e.g. LLM_API_KEY=sample-key)."
    )


class LlmResource(ConfigurableResource):
    """Builds the LLM client from LLM_* settings: with web search unless LLM_WEB_SEARCH=false.

    `api_key` is set through EnvVar from the first of LLM_API_KEY, OPENAI_API_KEY and
    XAI_API_KEY that is set when the definitions load.
    """

    api_key: str | None = None

    def settings(self) -> LlmSettings:
        return load_settings(LlmSettings)

    def create_client(self, settings: LlmSettings) -> EventsLlmClient | GroundedEventsClient:
        if not self.api_key:
            raise missing_api_key_error(settings.llm_provider)
        client_class = GroundedEventsClient if settings.llm_web_search else EventsLlmClient
        return client_class(
            api_key=self.api_key,
            model=settings.model,
            base_url=settings.base_url,
            timeout_seconds=settings.llm_timeout_seconds,
        )
