"""What one attempt cost and how many tokens it used: the one rule, for every consumer.

An attempt reports what it spends in two ways: :class:`~orchestrator.events.UsageReported`
events (one per API call; they add up) and, when its stream ends normally,
:class:`~orchestrator.events.StreamFinished`, whose ``tokens`` and ``cost_usd`` (when given) are
the backend's own totals for the whole attempt. :func:`attempt_cost` decides between them; the
aggregate fold (the summary), the runner (settling the spend cap's reservation), the live display
and the report (per-attempt spans, the HTML tooltip) all call it, so they cannot disagree.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs

from orchestrator.events import StreamFinished, Tokens, UsageReported

_NONE = Tokens()  # frozen, so every fresh meter can share it


class AttemptCost(NamedTuple):
    """What one attempt used: its tokens, and its cost in USD (None when unknown, never 0).

    ``at_least_usd`` is what the spend cap counts: the cost when it is known, else what the
    usage events' estimates add up to (0.0 without any), a lower bound.

    A named tuple, not an attrs class: the runner and the aggregate fold each make one per
    attempt, and a tuple is the cheapest immutable value to make.
    """

    tokens: Tokens
    cost_usd: float | None
    at_least_usd: float = 0.0


def attempt_cost(
    usage: Tokens,
    usage_cost: float | None,
    finished: StreamFinished | None,
    usage_estimate: float = 0.0,
    *,
    streamed: bool = False,
) -> AttemptCost:
    """The tokens and cost of one attempt, from the sum of its usage events and its stream's end.

    ``usage`` and ``usage_cost`` are the sums over the attempt's usage events (``usage_cost`` the
    sum of the costs they state, None when none states one); ``finished`` is its
    ``stream_finished`` event, None if the attempt failed or has not ended.

    * Tokens: the stream's own total when it gives one, else the usage events' sum.
    * Cost: the stream's own cost when it gives one, else the usage events' stated costs, else
      unknown (None) if the attempt consumed anything (it reported tokens, its stream finished,
      or it ``streamed`` output: text, thinking or a tool call, which the provider bills even
      when the stream was cut before it said what it used), else 0.0: an attempt refused before
      it consumed anything (a 429, say) cost nothing. Unknown is never turned into 0.
    * At least: the cost when known, else ``usage_estimate``, the sum of the usage events'
      ``estimated_cost_usd`` (an attempt killed before its backend stated a cost was still
      paid for what it had used).
    """
    tokens = finished.tokens if finished is not None and finished.tokens is not None else usage
    cost: float | None
    if finished is not None and finished.cost_usd is not None:
        cost = finished.cost_usd
    elif usage_cost is not None:
        cost = usage_cost
    elif tokens.total or finished is not None or streamed:
        cost = None
    else:
        cost = 0.0
    return AttemptCost(tokens, cost, cost if cost is not None else usage_estimate)


@attrs.define(slots=True)
class AttemptMeter:
    """One attempt's usage events and stream end as they arrive; :meth:`cost` applies the rule."""

    usage: Tokens = _NONE
    usage_cost: float | None = None
    usage_estimate: float = 0.0
    finished: StreamFinished | None = None
    streamed: bool = False
    """Whether the attempt produced output (text, thinking, a tool call): set by the consumer
    where it notes the attempt's first output."""

    def add_usage(self, event: UsageReported) -> None:
        self.usage = event.tokens if self.usage is _NONE else self.usage + event.tokens
        if event.cost_usd is not None:
            self.usage_cost = (self.usage_cost or 0.0) + event.cost_usd
        if event.estimated_cost_usd is not None:
            self.usage_estimate += event.estimated_cost_usd

    def finish(self, event: StreamFinished) -> None:
        self.finished = event

    def cost(self) -> AttemptCost:
        """:func:`attempt_cost` of what has arrived so far."""
        return attempt_cost(
            self.usage, self.usage_cost, self.finished, self.usage_estimate, streamed=self.streamed
        )
