"""The fake Anthropic server's rate limits: requests, input tokens and output tokens metered
apart, each with a token bucket that holds a minute's worth and refills continuously, as the
Messages API meters them. Pure: the caller passes the time in.

What each bucket counts, as the API documents for current models:

* input tokens: the uncached input (``input_tokens`` plus ``cache_creation_input_tokens``);
  cache reads do not count (``cache_reads_count`` True: they do, as on older models);
* output tokens: the request's ``max_tokens`` when it arrives, corrected to the reply's real
  ``output_tokens`` when it ends (:meth:`Meter.settle`);
* requests: one each.

Every response carries ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,
remaining,reset}`` and ``anthropic-ratelimit-tokens-*`` (whichever of input and output has the
least left); a reset is the RFC 3339 time at which that bucket is full again. A request that
finds a bucket short gets a 429 ``rate_limit_error`` with ``retry-after`` in whole seconds.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import attrs

from orchestrator.backends.sim.server import Bucket


@attrs.frozen
class AnthropicLimits:
    """Requests, uncached input tokens and output tokens per minute (None: not limited)."""

    rpm: float | None = None
    input_tpm: float | None = None
    output_tpm: float | None = None
    cache_reads_count: bool = False


@attrs.frozen
class Charge:
    """What one request costs: its input as the reply's usage reports it, and its budget."""

    input_tokens: int
    cache_read: int
    cache_creation: int
    max_tokens: int


@attrs.frozen
class Admission:
    """The headers every response carries and, for a refused request, the wait in seconds."""

    headers: dict[str, str]
    retry_after: float | None = None
    refused_by: str | None = None


class Meter:
    """Admits or refuses requests against :class:`AnthropicLimits`; counts what it refused."""

    def __init__(self, limits: AnthropicLimits, start: float) -> None:
        self.limits = limits
        self._buckets = {
            name: Bucket(limit, limit, start)
            for name, limit in (
                ("requests", limits.rpm),
                ("input-tokens", limits.input_tpm),
                ("output-tokens", limits.output_tpm),
            )
            if limit
        }
        self.admitted = 0
        self.refused = 0

    def _costs(self, usage: Charge) -> dict[str, int]:
        cached = usage.cache_read if self.limits.cache_reads_count else 0
        return {
            "requests": 1,
            "input-tokens": usage.input_tokens + usage.cache_creation + cached,
            "output-tokens": usage.max_tokens,
        }

    def admit(self, now: float, usage: Charge, wall: float) -> Admission:
        """Charge one request at ``now`` (the meter's clock); ``wall`` is the Unix time, for the
        reset timestamps."""
        costs = self._costs(usage)
        wait, short = 0.0, None
        for name, bucket in self._buckets.items():
            bucket.refill(now)
            needed = bucket.wait_for(costs[name])
            if needed > wait:
                wait, short = needed, name
        if short is None:
            for name, bucket in self._buckets.items():
                bucket.level -= min(costs[name], bucket.limit)
            self.admitted += 1
            return Admission(self.headers(wall))
        self.refused += 1
        return Admission(self.headers(wall), wait, short)

    def settle(self, now: float, max_tokens: int, output_tokens: int) -> None:
        """A reply has ended: output tokens budgeted and not used go back to the bucket."""
        bucket = self._buckets.get("output-tokens")
        if bucket is not None:
            bucket.refill(now)
            bucket.level = min(bucket.limit, bucket.level + max(0, max_tokens - output_tokens))

    def headers(self, wall: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in self._buckets.items():
            self._describe(headers, name, bucket, wall)
        tokens = [b for n, b in self._buckets.items() if n != "requests"]
        if tokens:
            self._describe(headers, "tokens", min(tokens, key=lambda b: b.level), wall)
        return headers

    @staticmethod
    def _describe(headers: dict[str, str], name: str, bucket: Bucket, wall: float) -> None:
        full_in = (bucket.limit - bucket.level) * 60.0 / bucket.limit
        prefix = f"anthropic-ratelimit-{name}"
        headers[f"{prefix}-limit"] = str(round(bucket.limit))
        headers[f"{prefix}-remaining"] = str(max(0, math.floor(bucket.level)))
        headers[f"{prefix}-reset"] = rfc3339(wall + full_in)


def rfc3339(unix: float) -> str:
    """A Unix time as the API writes a reset: whole seconds, UTC, rounded up."""
    return datetime.fromtimestamp(math.ceil(unix), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
