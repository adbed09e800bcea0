"""Tests of the price table: cost estimates, LLM_PRICES parsing and unknown models."""

import json
import logging

import pytest

from center_pipeline.config import ConfigError, LlmSettings, load_settings
from center_pipeline.db.batch_runs import batch_totals
from center_pipeline.events.pricing import (
    DEFAULT_PRICES,
    CallUsage,
    ModelPrice,
    cost_or_none,
    price_for_model,
)

PRICE = ModelPrice(input_per_million=2.0, output_per_million=8.0, per_tool_call=0.01)


def test_cost_sums_tokens_and_tool_calls():
    usage = CallUsage(input_tokens=500_000, output_tokens=250_000, tool_calls=3)

    # 0.5 M input at $2, 0.25 M output at $8 and 3 calls at $0.01.
    assert PRICE.cost_usd(usage) == pytest.approx(1.0 + 2.0 + 0.03)


def test_default_models_have_prices():
    assert set(DEFAULT_PRICES) == {"gpt-4o-mini", "grok-3-mini"}
    for price in DEFAULT_PRICES.values():
        assert price.input_per_million > 0
        assert price.output_per_million > 0
        assert price.per_tool_call > 0


def test_override_wins_over_default():
    override = {"gpt-4o-mini": PRICE}

    assert price_for_model("gpt-4o-mini", override) is PRICE
    assert price_for_model("grok-3-mini", override) == DEFAULT_PRICES["grok-3-mini"]


def test_unknown_model_warns_and_has_no_price(caplog):
    with caplog.at_level(logging.WARNING, logger="center_pipeline.events.pricing"):
        price = price_for_model("mystery-model", {})

    assert price is None
    assert "mystery-model" in caplog.text
    assert "LLM_PRICES" in caplog.text


def test_cost_unknown_without_price():
    assert cost_or_none(None, CallUsage(input_tokens=10)) is None
    assert cost_or_none(None, CallUsage()) == 0.0
    assert cost_or_none(PRICE, CallUsage(tool_calls=2)) == pytest.approx(0.02)


def test_llm_prices_read_from_environment(monkeypatch):
    prices = {"my-model": {"input_per_million": 1, "output_per_million": 4}}
    monkeypatch.setenv("LLM_PRICES", json.dumps(prices))
    monkeypatch.setenv("LLM_WEB_SEARCH", "false")

    settings = load_settings(LlmSettings)

    assert settings.llm_prices == {
        "my-model": ModelPrice(input_per_million=1, output_per_million=4, per_tool_call=0)
    }
    assert settings.llm_web_search is False


def test_llm_settings_defaults(monkeypatch):
    for name in ("LLM_PRICES", "LLM_WEB_SEARCH"):
        monkeypatch.delenv(name, raising=False)

    settings = load_settings(LlmSettings)

    assert settings.llm_prices == {}
    assert settings.llm_web_search is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not json", "must be a JSON object"),
        ("[1, 2]", "must be a JSON object"),
        ('{"m": {"input_per_million": -1, "output_per_million": 1}}', "model 'm'"),
        ('{"m": {"input_per_million": 1}}', "output_per_million"),
        ('{"m": {"input_per_million": 1, "output_per_million": 1, "typo": 2}}', "typo"),
    ],
)
def test_invalid_llm_prices_named(monkeypatch, value, expected):
    monkeypatch.setenv("LLM_PRICES", value)

    with pytest.raises(ConfigError) as error:
        load_settings(LlmSettings)

    assert "LLM_PRICES" in str(error.value)
    assert expected in str(error.value)


def test_batch_totals_unknown_cost():
    priced = _result(cost_usd=0.25, prompt_tokens=10, tool_calls=1)
    unpriced = _result(cost_usd=None, prompt_tokens=10)
    no_call = _result(cost_usd=None)
    carried = _result(cost_usd=0.0, carried_over_from="run-1")

    assert batch_totals([priced, no_call, carried])["cost_usd"] == pytest.approx(0.25)
    totals = batch_totals([priced, unpriced, carried])
    assert totals["cost_usd"] is None
    assert totals["unpriced_centers"] == 1
    assert totals["prompt_tokens"] == 20
    assert totals["tool_calls"] == 1
    assert totals["carried_over_centers"] == 1


def _result(**values) -> dict:
    row = {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "tool_calls": 0,
        "cost_usd": 0.0,
        "dropped_unsourced": 0,
        "carried_over_from": None,
    }
    row.update(values)
    return row
