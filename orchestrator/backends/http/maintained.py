"""Prices kept by others: the ``genai-prices`` package (``pip install 'orchestrator-llm[prices]'``).

It ships its price data inside its wheel and reads nothing from the network unless asked to
update (we never ask), so it works offline. It is imported only when an HTTP backend first
prices a reply, never by ``import orchestrator``: it pulls in pydantic and takes ~0.15 s to
import. It knows tiered prices (long prompts) and more models than our built-in table.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from orchestrator.events import Tokens

DISTRIBUTION = "genai-prices"


@functools.cache
def source() -> str | None:
    """How the summary names this source ("genai-prices 0.2.5"), or None when not installed."""
    if importlib.util.find_spec("genai_prices") is None:
        return None
    try:
        return f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}"
    except importlib.metadata.PackageNotFoundError:
        return DISTRIBUTION


def _usage(tokens: Tokens) -> Any:
    from genai_prices import Usage

    # genai-prices counts cache reads and writes inside the input tokens; ours are disjoint.
    return Usage(
        input_tokens=tokens.input + tokens.cache_read + tokens.cache_creation,
        cache_read_tokens=tokens.cache_read,
        cache_write_tokens=tokens.cache_creation,
        output_tokens=tokens.output,
    )


@functools.cache
def cost_function(provider: str, model: str) -> Callable[[Tokens], float] | None:
    """Dollars for a reply's tokens from ``provider``'s ``model``; None when genai-prices is not
    installed or does not know the model (or a snapshot of it)."""
    if source() is None:
        return None
    from genai_prices import calc_price

    try:
        calc_price(_usage(Tokens()), model_ref=model, provider_id=provider)
    except LookupError:
        return None

    def cost(tokens: Tokens) -> float:
        price: Decimal = calc_price(_usage(tokens), model_ref=model, provider_id=provider).total_price
        return float(price)

    return cost
