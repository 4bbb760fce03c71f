"""What tokens cost: per-model prices and the cost of an attempt. Pure data and functions.

Prices are US dollars per million tokens. The built-in tables are the providers' published
list prices (standard tier, 5-minute cache writes) as of late 2025; they change, so a job file
can add or replace entries per backend::

    [backends.openai.prices]
    "gpt-4o-mini" = { input = 0.15, output = 0.60, cache_read = 0.075 }
    "llama3.1:8b" = { input = 0, output = 0 }     # a local server: free

A model without a price has an unknown cost (None), never zero: the summary counts such jobs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from orchestrator.events import Tokens


@attrs.frozen
class Price:
    """US dollars per million tokens. A cache price left out is charged at the input price
    (an upper bound for reads; what OpenAI charges for writes)."""

    input: float = attrs.field(metadata={"min": 0})
    output: float = attrs.field(metadata={"min": 0})
    cache_read: float | None = attrs.field(default=None, metadata={"min": 0})
    cache_write: float | None = attrs.field(default=None, metadata={"min": 0})


def _anthropic(input: float, output: float) -> Price:
    # Anthropic: cache reads cost 0.1x input, 5-minute cache writes 1.25x.
    return Price(input, output, cache_read=round(input * 0.1, 6), cache_write=round(input * 1.25, 6))


ANTHROPIC_PRICES: Mapping[str, Price] = {
    "claude-opus-4-5": _anthropic(5.0, 25.0),
    "claude-opus-4-1": _anthropic(15.0, 75.0),
    "claude-opus-4-0": _anthropic(15.0, 75.0),
    "claude-opus-4": _anthropic(15.0, 75.0),
    "claude-sonnet-4-5": _anthropic(3.0, 15.0),
    "claude-sonnet-4-0": _anthropic(3.0, 15.0),
    "claude-sonnet-4": _anthropic(3.0, 15.0),
    "claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "claude-3-5-sonnet": _anthropic(3.0, 15.0),
    "claude-haiku-4-5": _anthropic(1.0, 5.0),
    "claude-3-5-haiku": _anthropic(0.8, 4.0),
    "claude-3-haiku": _anthropic(0.25, 1.25),
}

OPENAI_PRICES: Mapping[str, Price] = {
    # OpenAI bills cached prompt tokens at the cache_read price and has no separate write price.
    "gpt-5": Price(1.25, 10.0, cache_read=0.125),
    "gpt-5-mini": Price(0.25, 2.0, cache_read=0.025),
    "gpt-5-nano": Price(0.05, 0.4, cache_read=0.005),
    "gpt-4.1": Price(2.0, 8.0, cache_read=0.5),
    "gpt-4.1-mini": Price(0.4, 1.6, cache_read=0.1),
    "gpt-4.1-nano": Price(0.1, 0.4, cache_read=0.025),
    "gpt-4o": Price(2.5, 10.0, cache_read=1.25),
    "gpt-4o-mini": Price(0.15, 0.6, cache_read=0.075),
    "o3": Price(2.0, 8.0, cache_read=0.5),
    "o4-mini": Price(1.1, 4.4, cache_read=0.275),
}

# A dated snapshot or alias of a priced model: "gpt-4o-mini-2024-07-18", "claude-sonnet-4-5-20250929",
# "claude-3-5-haiku-latest". Anything else must match exactly: "gpt-4o" must not price "gpt-4o-audio".
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)")


def find_price(prices: Mapping[str, Price], model: str | None) -> Price | None:
    """The price of ``model``: an exact entry, else the entry it is a dated snapshot of."""
    if model is None:
        return None
    price = prices.get(model)
    if price is not None:
        return price
    match = _SNAPSHOT.search(model)
    while match is not None:
        if match.end() == len(model):
            return prices.get(model[: match.start()])
        match = _SNAPSHOT.search(model, match.start() + 1)
    return None


def cost_usd(price: Price | None, tokens: Tokens) -> float | None:
    """Dollars for ``tokens`` at ``price``; None when the price is unknown."""
    if price is None:
        return None
    cache_read = price.input if price.cache_read is None else price.cache_read
    cache_write = price.input if price.cache_write is None else price.cache_write
    total = (
        tokens.input * price.input
        + tokens.output * price.output
        + tokens.cache_read * cache_read
        + tokens.cache_creation * cache_write
    )
    return total / 1e6


def unpriced(model: str | None, backend: str) -> str:
    """What to say when a reply's model has no price."""
    return f"no price for model {model!r}: cost unknown (add it under [backends.{backend}.prices])"
