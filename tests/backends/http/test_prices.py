"""Prices: which entry prices a model, what an attempt costs, and the job-file table."""

from __future__ import annotations

import pytest

from orchestrator.backends.http.prices import ANTHROPIC_PRICES, OPENAI_PRICES, Price, cost_usd, find_price
from orchestrator.config.jobfile import build_batch
from orchestrator.errors import ConfigError
from orchestrator.events import Tokens


def test_a_dated_snapshot_takes_its_models_price_and_nothing_else_is_guessed() -> None:
    assert find_price(OPENAI_PRICES, "gpt-4o-mini-2024-07-18") == OPENAI_PRICES["gpt-4o-mini"]
    assert find_price(ANTHROPIC_PRICES, "claude-sonnet-4-5-20250929") == ANTHROPIC_PRICES["claude-sonnet-4-5"]
    assert find_price(ANTHROPIC_PRICES, "claude-3-5-haiku-latest") == ANTHROPIC_PRICES["claude-3-5-haiku"]
    assert find_price(OPENAI_PRICES, "gpt-4o-audio-preview") is None
    assert find_price(OPENAI_PRICES, "my-local-llama") is None
    assert find_price(OPENAI_PRICES, None) is None


def test_cost_counts_every_kind_of_token_and_is_unknown_without_a_price() -> None:
    price = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    tokens = Tokens(input=1_000_000, output=100_000, cache_read=1_000_000, cache_creation=100_000)
    assert cost_usd(price, tokens) == pytest.approx(3.0 + 1.5 + 0.3 + 0.375)
    assert cost_usd(Price(input=2.0, output=0.0), Tokens(cache_read=1_000_000)) == pytest.approx(2.0)
    assert cost_usd(None, tokens) is None


def test_a_job_file_price_table_is_checked_strictly() -> None:
    good = {
        "prices": {"local": {"input": 0, "output": 0}, "gpt-4o": {"input": 1, "output": 2, "cache_read": 0.5}}
    }
    spec = build_batch(["q"], {"backend": "openai", "model": "m", "backends": {"openai": good}})
    assert spec.backends["openai"].prices["gpt-4o"] == Price(1.0, 2.0, cache_read=0.5)
    bad = {
        "prices": {
            "a": {"input": -1, "output": 1},
            "b": {"input": "1", "output": 1},
            "c": {"output": 1, "cache": 1},
        }
    }
    with pytest.raises(ConfigError) as caught:
        build_batch(["q"], {"backend": "openai", "model": "m", "backends": {"openai": bad}})
    assert caught.value.problems == [
        "backends.openai.prices.a.input: must be >= 0, got -1.0",
        'backends.openai.prices.b.input: expected a number, got string "1"',
        "backends.openai.prices.c.cache: unknown key (did you mean 'cache_read'?)",
        "backends.openai.prices.c.input: required",
    ]
