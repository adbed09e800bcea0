"""Estimated cost of LLM calls from token counts, tool calls and a per-model price table."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

PRICES_ENV_VAR = "LLM_PRICES"


class ModelPrice(BaseModel):
    """USD prices of one model: per million input and output tokens, and per tool call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    per_tool_call: float = Field(default=0.0, ge=0)

    def cost_usd(self, usage: "CallUsage") -> float:
        """Return the estimated cost of `usage` in USD."""
        return (
            usage.input_tokens * self.input_per_million / 1_000_000
            + usage.output_tokens * self.output_per_million / 1_000_000
            + usage.tool_calls * self.per_tool_call
        )


# Estimates, read on 2026-12-04 from public pages that quote the providers' prices:
# - gpt-4o-mini: $0.15 / $0.60 per million tokens (openrouter.ai/openai/gpt-4o-mini-2024-07-18)
#   and $10 per 1,000 web search calls (modelcostwatch.com/openai/tool-costs/web-search,
#   which checked OpenAI's pricing page on 2026-03-12).
# - grok-3-mini: $0.30 / $0.50 per million tokens (openrouter.ai/x-ai/grok-3-mini) and $5
#   per 1,000 web search calls (docs.x.ai/developers/pricing).
# NOTE: OpenAI bills gpt-4o-mini's search content as a fixed block of input tokens per
# call, which the usage of a response may not include, so the estimate can be low.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(input_per_million=0.15, output_per_million=0.60, per_tool_call=0.01),
    "grok-3-mini": ModelPrice(input_per_million=0.30, output_per_million=0.50, per_tool_call=0.005),
}


@dataclass(frozen=True)
class CallUsage:
    """Input and output tokens and server-side tool calls of one LLM call."""

    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0


def price_for_model(model: str, overrides: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """Return the price of `model` from `overrides` (LLM_PRICES), else from DEFAULT_PRICES.

    An unknown model returns None and logs a warning, so its costs are reported as unknown
    instead of failing the batch.
    """
    price = overrides.get(model) or DEFAULT_PRICES.get(model)
    if price is None:
        known = ", ".join(sorted({*DEFAULT_PRICES, *overrides}))
        logger.warning(
            "No price for model %r, so its cost is reported as unknown. Add it to %s, e.g. "
            '%s=\'{"%s": {"input_per_million": 0.15, "output_per_million": 0.6, '
            '"per_tool_call": 0.01}}\'. Priced models: %s.',
            model,
            PRICES_ENV_VAR,
            PRICES_ENV_VAR,
            model,
            known,
        )
    return price


def cost_or_none(price: ModelPrice | None, usage: CallUsage) -> float | None:
    """Return the estimated cost of `usage`, or None when the price is unknown.

    A call that used nothing costs 0.0 even without a price.
    """
    if usage == CallUsage():
        return 0.0
    return price.cost_usd(usage) if price is not None else None
