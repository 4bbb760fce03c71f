"""The rate limits of the simulated API server behind the ``sim`` backend.

Like the real providers it meters requests and tokens with token buckets: each holds a minute's
worth (the limit) and refills continuously at limit/60 per second. A request that finds a bucket
short is refused with 429 and a Retry-After of the time until it would fit; every admitted one
announces the limits and what is left (as response headers would). The limits may change once,
at a given time, to test a client that must adapt. Pure: the caller passes the time in.
"""

from __future__ import annotations

import attrs

from orchestrator.events import RateLimitInfo


@attrs.frozen
class Verdict:
    """The server's answer to one request: admitted (with what it announces) or refused."""

    admitted: bool
    retry_after: float | None
    info: RateLimitInfo


@attrs.define
class Bucket:
    """``limit`` units a minute, starting full."""

    limit: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.updated) * self.limit / 60.0)
        self.updated = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` units are there (0 if they are)."""
        return max(0.0, (min(cost, self.limit) - self.level) * 60.0 / self.limit)

    def resize(self, limit: float) -> None:
        self.limit = limit
        self.level = min(self.level, limit)


class SimServer:
    """Request and token buckets; ``change_at`` (seconds from ``start``) swaps in the ``*_after``
    limits."""

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None,
        *,
        start: float,
        change_at: float | None = None,
        rpm_after: float | None = None,
        tpm_after: float | None = None,
    ) -> None:
        self.requests = Bucket(rpm, rpm, start) if rpm else None
        self.tokens = Bucket(tpm, tpm, start) if tpm else None
        self._change = None if change_at is None else start + change_at
        self._after = (rpm_after, tpm_after)

    def admit(self, now: float, tokens: int) -> Verdict:
        if self._change is not None and now >= self._change:
            self._change = None
            for bucket, limit in zip((self.requests, self.tokens), self._after, strict=True):
                if bucket is not None and limit:
                    bucket.refill(now)
                    bucket.resize(limit)
        wait = 0.0
        for bucket, cost in ((self.requests, 1), (self.tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(cost))
        if wait > 0:
            return Verdict(False, wait, self._info())
        for bucket, cost in ((self.requests, 1), (self.tokens, tokens)):
            if bucket is not None:
                bucket.level -= min(cost, bucket.limit)
        return Verdict(True, None, self._info())

    def _info(self) -> RateLimitInfo:
        def describe(bucket: Bucket | None) -> tuple[int | None, int | None, float | None]:
            if bucket is None:
                return None, None, None
            return int(bucket.limit), int(bucket.level), (bucket.limit - bucket.level) * 60.0 / bucket.limit

        r_limit, r_left, r_reset = describe(self.requests)
        t_limit, t_left, t_reset = describe(self.tokens)
        return RateLimitInfo(r_limit, r_left, r_reset, t_limit, t_left, t_reset)
