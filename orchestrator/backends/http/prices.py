"""What tokens cost: per-model prices and the cost of an attempt. Pure data and functions.

Prices are US dollars per million tokens. The built-in tables are the providers' published
list prices (standard tier, 5-minute cache writes) as of late 2025; they change, so a job file
can add or replace entries per backend::

    [backends.openai.prices]
    "gpt-4o-mini" = { input = 0.15, output = 0.60, cache_read = 0.075 }
    "llama3.1:8b" = { input = 0, output = 0 }     # a local server: free

A model without a price has an unknown cost (None), never zero: the summary counts such jobs.

Where a price comes from (:class:`PriceBook`, first match wins): the job file's table, then
``genai-prices`` when it is installed (a maintained table, see
:mod:`~orchestrator.backends.http.maintained`), then the built-in table. Each priced reply says
which one priced it (``priced_by``), and so does the summary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

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


JOB_FILE = "job file"
BUILT_IN = "built-in table"
BATCH_PRICE = 0.5
"""What the providers' batch APIs charge, as a share of the streaming price (Anthropic Message
Batches and OpenAI Batch: half price, input and output alike)."""


@attrs.frozen
class Pricing:
    """How one model's replies are priced, and which source says so."""

    source: str
    cost: Callable[[Tokens], float]


class PriceBook:
    """One backend's prices: ``overrides`` (the job file's), then the maintained source (when
    ``maintained`` and installed), then ``built_in``. Lookups are remembered per model."""

    def __init__(
        self,
        provider: str,
        built_in: Mapping[str, Price],
        overrides: Mapping[str, Price] | None = None,
        *,
        maintained: bool = True,
        scale: float = 1.0,
    ) -> None:
        self.provider = provider
        self.scale = scale
        """Every cost times this: :data:`BATCH_PRICE` for a batch API."""
        self.built_in = built_in
        self.overrides = overrides or {}
        self.maintained = maintained
        self._found: dict[str | None, Pricing | None] = {}

    def pricing(self, model: str | None) -> Pricing | None:
        """How ``model`` is priced, or None when no source knows it."""
        if model not in self._found:
            self._found[model] = self._look_up(model)
        return self._found[model]

    def _look_up(self, model: str | None) -> Pricing | None:
        if model is None:
            return None
        price = find_price(self.overrides, model)
        if price is not None:
            return _at(price, JOB_FILE)
        if self.maintained:
            from orchestrator.backends.http import maintained

            cost = maintained.cost_function(self.provider, model)
            source = maintained.source()
            if cost is not None and source is not None:
                return Pricing(source, cost)
        price = find_price(self.built_in, model)
        return _at(price, BUILT_IN) if price is not None else None

    def cost(self, model: str | None, tokens: Tokens) -> tuple[float | None, str | None]:
        """Dollars for ``tokens`` of ``model`` and the source that priced them; (None, None)
        when the price is unknown."""
        pricing = self.pricing(model)
        if pricing is None:
            return None, None
        return pricing.cost(tokens) * self.scale, pricing.source


def _at(price: Price, source: str) -> Pricing:
    return Pricing(source, lambda tokens: cost_usd(price, tokens) or 0.0)


def as_book(provider: str, prices: PriceBook | Mapping[str, Price]) -> PriceBook:
    """A plain table is a book of built-in prices alone (what the decoders' tests pass)."""
    return prices if isinstance(prices, PriceBook) else PriceBook(provider, prices, maintained=False)
