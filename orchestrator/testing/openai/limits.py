"""The fake OpenAI server's rate limits: request and token buckets, the ``x-ratelimit-*``
headers that announce them, and the 429 that refuses a request over them. Pure: the caller
passes the time in.

The buckets are :class:`orchestrator.backends.sim.server.SimServer`'s, run on a scaled clock:
a minute of the sim server's lasts ``window`` seconds here. So the limits are still rates per
minute (what the headers announce, what ``[backends.openai] rpm/tpm`` are compared with), but a
bucket holds only ``window`` seconds' worth of them. The real APIs hold a whole minute's worth
(``window`` 60); a short window keeps a test from finishing inside the first, free burst.
Remaining counts and reset durations describe the scaled bucket as it is: at most ``window``
seconds of refill, at most ``rpm * window / 60`` requests left.

With ``fixed`` True the meter counts in fixed windows instead, as some gateways and
self-hosted servers do: each ``window`` seconds (from the meter's start) allows ``rpm * window /
60`` requests and the same share of the tokens, and nothing comes back before the window ends.
Its headers are as honest: the per-minute limit, what is left of this window's allowance, and
the time until the window ends (when the allowance is whole again).

What a request costs in tokens is the caller's to say (the fake charges the usage of the reply
it is about to send, so a client that settles its reservations against the reported usage
sees the same count as the server).
"""

from __future__ import annotations

import math

import attrs

from orchestrator.backends.sim.server import Bucket, SimServer, Verdict
from orchestrator.events import RateLimitInfo


@attrs.frozen
class RateLimits:
    """Requests and tokens per minute (None: not limited); buckets hold ``window`` seconds'
    worth and start full (or, ``fixed``, each window of that length allows that much)."""

    rpm: float | None = None
    tpm: float | None = None
    window: float = 60.0
    fixed: bool = False
    """Fixed windows of ``window`` seconds instead of token buckets."""


@attrs.frozen
class Admission:
    """The meter's answer to one request: the headers every response carries and, when the
    request is refused, how long until it would fit and which limit refused it."""

    headers: dict[str, str]
    retry_after: float | None = None
    refused_by: str | None = None
    """``"requests"`` or ``"tokens"``."""
    message: str = ""


class Meter:
    """Admits or refuses requests against :class:`RateLimits`; counts what it refused."""

    def __init__(self, limits: RateLimits, start: float) -> None:
        self.limits = limits
        self._scale = 60.0 / limits.window  # sim-server seconds per real second
        per_window = limits.window / 60.0
        self._server = SimServer(
            limits.rpm * per_window if limits.rpm else None,
            limits.tpm * per_window if limits.tpm else None,
            start=start * self._scale,
        )
        self._windows = (
            FixedWindows(self._server.requests, self._server.tokens, start * self._scale)
            if limits.fixed
            else None
        )
        self.admitted = 0
        self.refused = 0

    def admit(self, now: float, tokens: int, model: str = "fake-model") -> Admission:
        """Charge one request of ``tokens`` at ``now`` (seconds, the ``start`` clock)."""
        if self._windows is not None:
            verdict = self._windows.admit(now * self._scale, tokens)
        else:
            verdict = self._server.admit(now * self._scale, tokens)
        info = verdict.info
        headers: dict[str, str] = {}
        for what, limit, left, reset in (
            ("requests", self.limits.rpm, info.requests_remaining, info.requests_reset_s),
            ("tokens", self.limits.tpm, info.tokens_remaining, info.tokens_reset_s),
        ):
            if limit:
                headers[f"x-ratelimit-limit-{what}"] = str(round(limit))
                headers[f"x-ratelimit-remaining-{what}"] = str(left)
                headers[f"x-ratelimit-reset-{what}"] = go_duration((reset or 0.0) / self._scale)
        if verdict.admitted:
            self.admitted += 1
            return Admission(headers)
        self.refused += 1
        wait = (verdict.retry_after or 0.0) / self._scale
        # The request bucket refuses only when it lacks a whole request; else it was the tokens.
        by = "requests" if self.limits.rpm and (info.requests_remaining or 0) < 1 else "tokens"
        limit = self.limits.rpm if by == "requests" else self.limits.tpm
        short = "RPM" if by == "requests" else "TPM"
        message = (
            f"Rate limit reached for {model} in organization org-fake on {by} per min ({short}): "
            f"Limit {round(limit or 0)}, Requested {1 if by == 'requests' else tokens}. "
            f"Please try again in {go_duration(wait)}."
        )
        return Admission(headers, wait, by, message)


class FixedWindows:
    """Fixed one-minute windows on the sim server's (scaled) clock, with the allowances of
    ``requests`` and ``tokens`` (buckets used only for their limits); counts restart at each
    window's start."""

    def __init__(self, requests: Bucket | None, tokens: Bucket | None, start: float) -> None:
        self._limits = (requests.limit if requests else None, tokens.limit if tokens else None)
        self._start = start
        self._window = 0
        self._used = [0.0, 0.0]

    def admit(self, now: float, tokens: int) -> Verdict:
        window = math.floor((now - self._start) / 60.0)
        if window != self._window:
            self._window, self._used = window, [0.0, 0.0]
        ends_in = self._start + (window + 1) * 60.0 - now
        costs = (1, tokens)
        fits = all(
            limit is None or used + min(cost, limit) <= limit
            for limit, used, cost in zip(self._limits, self._used, costs, strict=True)
        )
        if fits:
            for i, (limit, cost) in enumerate(zip(self._limits, costs, strict=True)):
                if limit is not None:
                    self._used[i] += min(cost, limit)
        return Verdict(fits, None if fits else ends_in, self._info(ends_in))

    def _info(self, ends_in: float) -> RateLimitInfo:
        (r_limit, t_limit), (r_used, t_used) = self._limits, self._used
        return RateLimitInfo(
            int(r_limit) if r_limit else None,
            int(r_limit - r_used) if r_limit else None,
            ends_in if r_limit else None,
            int(t_limit) if t_limit else None,
            int(t_limit - t_used) if t_limit else None,
            ends_in if t_limit else None,
        )


def go_duration(seconds: float) -> str:
    """``seconds`` as the OpenAI API writes a reset: ``20ms`` under a second, else hours,
    minutes and seconds with up to three decimals (``1s``, ``6m0s``, ``1h2m3.5s``)."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    text = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text
