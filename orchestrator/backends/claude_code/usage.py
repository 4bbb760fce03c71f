"""What a Claude Code attempt has used so far, told as it goes: per-message usage, then the rest.

Pure part of :class:`~.decode.ClaudeDecoder`. The CLI states its totals (tokens, cost) only in
its last line, the ``result``; an attempt cut short (timeout, Ctrl-C, a crash) never prints one,
although every API call it made was answered and billed. So each message's usage, as the
``assistant`` lines and the ``message_start``/``message_delta`` stream events report it, goes
out as a :class:`UsageReported` as soon as it grows: a lower bound of the attempt's tokens, with
an estimated cost from a price table that the spend cap counts (the job's cost stays unknown).
The ``result`` then adds what the messages did not show, with the CLI's own cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.backends.claude_code.outcome import result_tokens, tokens_from_usage
from orchestrator.backends.fields import number_or_none
from orchestrator.events import Tokens, UsageReported

Price = Callable[[str | None, Tokens], float | None]
"""Dollars for a model's tokens by some price table; None when the model has no price."""


def _most(a: Tokens, b: Tokens) -> Tokens:
    return Tokens(
        max(a.input, b.input),
        max(a.output, b.output),
        max(a.cache_read, b.cache_read),
        max(a.cache_creation, b.cache_creation),
    )


def _beyond(a: Tokens, b: Tokens) -> Tokens:
    """What ``a`` has beyond ``b``, field by field (never negative)."""
    return Tokens(
        max(0, a.input - b.input),
        max(0, a.output - b.output),
        max(0, a.cache_read - b.cache_read),
        max(0, a.cache_creation - b.cache_creation),
    )


class UsageMeter:
    """Turns the usage the CLI reports along the way into :class:`UsageReported` increments.

    A message's usage is reported several times (each ``assistant`` line of it repeats it, the
    stream events grow it); counts are per message, the highest seen, and only growth is sent,
    so the events add up to what the messages used.
    """

    def __init__(self, price: Price | None = None) -> None:
        self._price = price
        self._seen: dict[str, Tokens] = {}
        self._models: dict[str, str | None] = {}
        self.reported = Tokens()

    def message(self, message_id: str | None, model: str | None, usage: Any) -> list[UsageReported]:
        """The usage event for what ``usage`` (an API usage object) adds to message ``message_id``.

        A message without an id cannot be told from a repeat of another: its usage waits for the
        result line.
        """
        if message_id is None or not isinstance(usage, Mapping):
            return []
        if model is not None or message_id not in self._models:
            self._models[message_id] = model
        before = self._seen.get(message_id, Tokens())
        now = _most(before, tokens_from_usage(usage))
        grown = _beyond(now, before)
        if not grown.total:
            return []
        self._seen[message_id] = now
        self.reported = self.reported + grown
        estimate = self._price(self._models[message_id], grown) if self._price is not None else None
        return [UsageReported(grown, estimated_cost_usd=estimate)]

    def result(self, result: Mapping[str, Any], *, failed: bool) -> list[UsageReported]:
        """What the ``result`` line adds: the tokens beyond those already reported and, when
        ``failed``, the CLI's ``total_cost_usd``.

        A succeeded attempt's cost travels in its :class:`StreamFinished`, which replaces the
        attempt's usage events in the totals; a failed one is charged what its usage events state,
        so the CLI's cost goes here, or the job's cost would be unknown although the CLI knew it.
        """
        tokens = result_tokens(result)
        cost = number_or_none(result.get("total_cost_usd")) if failed else None
        rest = _beyond(tokens, self.reported) if tokens is not None else Tokens()
        if not rest.total and cost is None:
            return []
        self.reported = self.reported + rest
        return [UsageReported(rest, cost_usd=cost)]
