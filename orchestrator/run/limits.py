"""Staying under a backend's rate limits: pacing, server-driven pauses, adaptive concurrency.

* :class:`Pacer` models the provider's own meter: a token bucket per limit (requests, tokens)
  that holds ``burst`` seconds of refill (a minute's worth by default, as Anthropic and OpenAI
  meter) and refills continuously at the limit. A fresh batch may spend what the bucket holds at
  once, then starts are paced at the refill rate. It is kept as a virtual-scheduling (GCRA)
  schedule: each start pushes its bucket's "theoretical arrival time" forward by ``60 / rpm``
  seconds (``tokens * 60 / tpm`` for tokens), and a start may go when that time is at most
  ``burst`` seconds ahead of now (less what the start itself costs). ``burst`` 0 spaces every
  start evenly. When the server tells how much of its quota remains, the bucket is drained to
  match if the server's view is the tighter one (its snapshot never counts requests sent since).
  Waiters queue on a FIFO lock: first come, first served, no busy waiting.
* A 429/529 with Retry-After pauses the whole backend (every worker), not only the failed job;
  a second 429 within a minute means the provider enforces a shorter window than its announced
  limit suggests: the backend then paces smoothly (no burst) for the rest of the batch.
* :class:`AdaptiveLimit` runs AIMD on the backend's in-flight limit: halve on a rate-limit or
  overload error (once per round of attempts), add one per round of successes.

Decisions are pure arithmetic on trio's clock, so tests on the virtual clock are exact.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import attrs
import trio

from orchestrator.errors import ErrorKind
from orchestrator.events import LimiterChanged, RateLimitInfo
from orchestrator.spec import BackendLimits

Notify = Callable[[LimiterChanged], Awaitable[None]]

# Error kinds that mean "too much load": they pause the backend and shrink its concurrency.
BACKPRESSURE_KINDS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED})
# Waits shorter than this are ordinary pacing, not worth an event each.
_NOTABLE_WAIT = 1.0
_CATCH_UP = 0.05  # seconds of lateness a paced start may make up
_SMOOTH_AFTER = 60.0  # two 429s this close together turn bursting off
_BUCKET_SHARE = 0.95  # of the provider's bucket that a burst may spend


class Pacer:
    """Paces attempt starts on one backend (or one model of it) to rpm and tpm, with a bucket of
    ``burst`` seconds' worth of each (0: evenly spaced starts)."""

    def __init__(
        self,
        name: str,
        rpm: float | None,
        tpm: float | None,
        notify: Notify,
        on_pause: Callable[[float], None] = lambda until: None,
        *,
        burst: float = 0.0,
    ) -> None:
        self.name = name
        self._on_pause = on_pause
        self.rpm = rpm
        self.tpm = tpm
        self._bucket = burst  # seconds of refill the provider's bucket holds, as configured
        # A burst spends a little less: our clock and the provider's meter never agree exactly.
        self.burst = burst * _BUCKET_SHARE
        self._configured = (rpm, tpm)
        self._notify = notify
        # When each bucket would be full again ("theoretical arrival time"); -inf: full now.
        self._next_request = -math.inf
        self._next_tokens = -math.inf
        self.paused_until = -math.inf
        self._lock = trio.Lock()  # trio's Lock is fair: waiters are served in arrival order

    def paused(self) -> bool:
        """Whether a pause is in force now (the clock is only read if one was ever set)."""
        return self.paused_until != -math.inf and self.paused_until > trio.current_time()

    def ready_at(self, tokens: int = 0) -> float:
        """The earliest trio time a start of ``tokens`` may go."""
        ready = self.paused_until
        if self.rpm:
            ready = max(ready, self._next_request - max(self.burst - 60.0 / self.rpm, 0.0))
        if self.tpm:
            ready = max(ready, self._next_tokens - max(self.burst - tokens * 60.0 / self.tpm, 0.0))
        return ready

    async def acquire(self, tokens: int) -> None:
        """Wait for this request's turn, then charge it. Cancellation leaves nothing charged.

        Without limits and pauses there is nothing to wait for: return at once, no checkpoint.
        """
        if self.rpm is None and self.tpm is None and not self.paused():
            if not self._lock.locked():
                return
        async with self._lock:
            announced = False
            slept = False
            while True:
                now = trio.current_time()
                ready = self.ready_at(tokens)
                if ready <= now:
                    break
                # A pause was announced when it began; long pacing waits are announced here.
                if not announced and ready - now >= _NOTABLE_WAIT and ready != self.paused_until:
                    announced = True
                    await self._notify(
                        LimiterChanged(self.name, "pacing", None, ready, "waiting for the rate limit")
                    )
                await trio.sleep_until(ready)  # a pause may move ``ready`` meanwhile: look again
                slept = True
            # Book from the slot waited for, not from when the scheduler woke us: a wake-up is
            # ~1 ms late, which at 3,000 rpm would slow the pace by 5%. Never more than a little
            # catch-up, so a stalled event loop does not turn into a burst.
            start = max(ready, now - _CATCH_UP) if slept else now
            if self.rpm:
                self._next_request = max(self._next_request, start) + 60.0 / self.rpm
            if self.tpm:
                self._next_tokens = max(self._next_tokens, start) + tokens * 60.0 / self.tpm

    def settle(self, reserved: int, used: int) -> None:
        """Correct the token schedule once an attempt's real usage is known."""
        if self.tpm and used != reserved:
            self._next_tokens += (used - reserved) * 60.0 / self.tpm

    async def smooth(self, reason: str) -> None:
        """Pace evenly from now on (the provider meters a shorter window than a full bucket)."""
        if self.burst > 0:
            self.burst = self._bucket = 0.0
            # Whatever was spent ahead of the pace now counts against the next starts.
            await self._notify(LimiterChanged(self.name, "burst", 0.0, None, reason))

    async def pause(self, seconds: float, reason: str, *, announce: bool = True) -> None:
        """No new attempt starts for ``seconds`` (a server's Retry-After, an empty quota)."""
        until = trio.current_time() + seconds
        if until > self.paused_until:
            self.paused_until = until
            self._on_pause(until)
            if announce:
                await self._notify(LimiterChanged(self.name, "paused", None, until, reason))

    async def observe(self, info: RateLimitInfo) -> None:
        """Adopt what the server announces: a lower limit than configured, how much of its
        quota remains, or an empty bucket."""
        configured_rpm, configured_tpm = self._configured
        if info.requests_limit:
            rpm = min(configured_rpm or math.inf, info.requests_limit)
            if rpm != self.rpm:
                self.rpm = rpm
                await self._notify(LimiterChanged(self.name, "rpm", rpm, None, "announced by the server"))
        if info.tokens_limit:
            tpm = min(configured_tpm or math.inf, info.tokens_limit)
            if tpm != self.tpm:
                self.tpm = tpm
                await self._notify(LimiterChanged(self.name, "tpm", tpm, None, "announced by the server"))
        now = trio.current_time()
        if info.requests_limit and info.requests_remaining is not None:
            self._next_request = max(
                self._next_request, self._server_level(now, info.requests_limit, info.requests_remaining)
            )
        if info.tokens_limit and info.tokens_remaining is not None:
            self._next_tokens = max(
                self._next_tokens, self._server_level(now, info.tokens_limit, info.tokens_remaining)
            )
        for remaining, reset, limit in (
            (info.requests_remaining, info.requests_reset_s, info.requests_limit),
            (info.tokens_remaining, info.tokens_reset_s, info.tokens_limit),
        ):
            if remaining is not None and remaining <= 0 and reset:
                # One unit of a per-minute quota comes back in 60/limit seconds: enough to go
                # on, and the pacer spaces what follows.
                wait = min(reset, 60.0 / limit) if limit else reset
                # Routine for a paced batch near its limit: only waits that matter are events.
                await self.pause(wait, "the server's quota is used up", announce=wait >= _NOTABLE_WAIT)

    def _server_level(self, now: float, limit: int, remaining: int) -> float:
        """The schedule time at which our bucket holds no more than the server says remains of
        its minute's worth (``limit - remaining`` used, refilling at ``limit`` a minute)."""
        used_s = max(limit - max(remaining, 0), 0) * 60.0 / limit
        return now + used_s - (60.0 - self._bucket)


class Slots:
    """A limit on attempts in flight: ``trio.CapacityLimiter`` without its per-borrower records,
    which cost several microseconds per attempt and which the runner has no use for (each attempt
    takes one slot and gives it back in a ``finally``). Waiters are served first come, first
    served; a freed slot goes straight to the next waiter, so nobody can take it in between.
    """

    def __init__(self, total: int) -> None:
        self._total = total
        self.used = 0
        self._waiting = trio.lowlevel.ParkingLot()

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        """Lowering it lets running attempts finish; raising it lets waiters in at once."""
        self._total = value
        while self.used < value and self._waiting:
            self.used += 1
            self._waiting.unpark()

    def has_room(self) -> bool:
        return self.used < self._total and not self._waiting

    def acquire_nowait(self) -> None:
        """Take a slot, or raise ``trio.WouldBlock`` (also when others are already waiting)."""
        if not self.has_room():
            raise trio.WouldBlock
        self.used += 1

    async def acquire(self) -> None:
        """Take a slot, waiting for one. Cancelled while waiting, it holds nothing."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.has_room():
            self.used += 1
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._waiting.park()  # woken holding the slot its releaser handed over

    def release(self) -> None:
        if self.used <= self._total and self._waiting:
            self._waiting.unpark()  # the slot changes hands; ``used`` stays
        else:
            self.used -= 1


class AdaptiveLimit:
    """AIMD on a backend's in-flight attempts, between ``floor`` and ``ceiling``.

    A decrease happens at most once per round: failures of attempts that started before the last
    decrease are echoes of the same overload and are ignored.
    """

    def __init__(self, name: str, ceiling: int, floor: int, notify: Notify) -> None:
        self.name = name
        self.ceiling = ceiling
        self.floor = max(1, min(floor, ceiling))
        self.value = float(ceiling)
        self.slots = Slots(ceiling)
        self.epoch = 0
        self._notify = notify

    async def _apply(self, reason: str) -> None:
        tokens = max(self.floor, min(self.ceiling, int(self.value)))
        if tokens != self.slots.total:
            self.slots.total = tokens
            await self._notify(LimiterChanged(self.name, "concurrency", tokens, None, reason))

    async def overloaded(self, started_in_epoch: int) -> None:
        if started_in_epoch != self.epoch:
            return
        self.epoch += 1
        self.value = max(float(self.floor), self.value / 2)
        await self._apply("rate limited or overloaded: halved")

    async def succeeded(self) -> None:
        if self.value < self.ceiling:
            self.value = min(float(self.ceiling), self.value + 1.0 / max(self.value, 1.0))
            await self._apply("successes: one more")


@attrs.define(slots=True, eq=False)
class Ticket:
    """One attempt's passage through a :class:`Gate`: what it reserved and what it used."""

    tokens: int
    epoch: int
    model: str | None
    used: int | None = None


class Gate:
    """Everything that decides when an attempt on one backend may start: its in-flight limit
    (adaptive or fixed), its pacer, and the pacers of single models."""

    def __init__(
        self,
        name: str,
        limits: BackendLimits,
        ceiling: int | None,
        notify: Notify,
        on_pause: Callable[[float], None] = lambda until: None,
        *,
        refund: bool = True,
    ) -> None:
        """``refund``: whether tokens an attempt reserved and did not use go back to the token
        pace (the server gives them back), or stay spent (it charged the whole reservation)."""
        self.name = name
        self.refund = refund
        self.adaptive: AdaptiveLimit | None = None
        self.slots: Slots | None = None
        if ceiling is not None and limits.adaptive:
            self.adaptive = AdaptiveLimit(name, ceiling, limits.min_concurrency, notify)
            self.slots = self.adaptive.slots
        elif ceiling is not None:
            self.slots = Slots(ceiling)
        burst = limits.burst_s
        self.pacer = Pacer(name, limits.rpm, limits.tpm, notify, on_pause, burst=burst)
        self.models = {
            model: Pacer(f"{name}/{model}", rate.rpm, rate.tpm, notify, burst=burst)
            for model, rate in limits.models.items()
        }
        self._last_429 = -math.inf

    def has_room(self) -> bool:
        """Whether an attempt could start now without waiting for a slot or a pause."""
        if self.slots is not None and not self.slots.has_room():
            return False
        return not self.pacer.paused()

    async def enter(self, tokens: int, model: str | None) -> Ticket:
        """Wait for a slot and the rate limits; the caller must :meth:`leave` afterwards, also
        on cancellation (which may happen here: then nothing is held)."""
        if self.slots is not None:
            try:
                self.slots.acquire_nowait()  # the common case, without a trip through the scheduler
            except trio.WouldBlock:
                await self.slots.acquire()
        try:
            epoch = self.adaptive.epoch if self.adaptive is not None else 0
            await self.pacer.acquire(tokens)
            pacer = self.models.get(model) if model is not None else None
            if pacer is not None:
                await pacer.acquire(tokens)
        except BaseException:
            if self.slots is not None:
                self.slots.release()
            raise
        return Ticket(tokens, epoch, model)

    def leave(self, ticket: Ticket) -> None:
        if self.slots is not None:
            self.slots.release()
        if ticket.used is not None:
            used = ticket.used if self.refund else max(ticket.used, ticket.tokens)
            self.pacer.settle(ticket.tokens, used)
            pacer = self.models.get(ticket.model) if ticket.model is not None else None
            if pacer is not None:
                pacer.settle(ticket.tokens, used)

    async def succeeded(self) -> None:
        if self.adaptive is not None:
            await self.adaptive.succeeded()

    async def failed(
        self, ticket: Ticket, kind: ErrorKind, retry_after: float | None, max_pause: float
    ) -> None:
        """A rate-limit or overload error pauses the backend (Retry-After, at most ``max_pause``
        seconds: the job's ``retry.max_retry_after``) and shrinks its in-flight limit."""
        if kind not in BACKPRESSURE_KINDS:
            return
        if kind == "rate_limited":
            now = trio.current_time()
            if now - self._last_429 < _SMOOTH_AFTER:
                reason = "a second 429 within a minute: even pacing for the rest of the batch"
                for pacer in (self.pacer, *self.models.values()):
                    await pacer.smooth(reason)
            self._last_429 = now
        if retry_after:
            wait = min(retry_after, max_pause)
            await self.pacer.pause(wait, f"{kind}: the server asked to wait {retry_after:g}s")
        if self.adaptive is not None:
            await self.adaptive.overloaded(ticket.epoch)

    async def observe(self, model: str | None, info: RateLimitInfo) -> None:
        pacer = self.models.get(model) if model is not None else None
        await (pacer or self.pacer).observe(info)


class Budget:
    """The batch's spend cap: what has been spent, and what running attempts may still spend."""

    def __init__(self, cap: float | None) -> None:
        self.cap = cap
        self.spent = 0.0
        self.reserved = 0.0

    def allows(self, estimate: float) -> bool:
        return self.cap is None or self.spent + self.reserved + estimate <= self.cap + 1e-12

    def reserve(self, estimate: float) -> None:
        self.reserved += estimate

    def settle(self, estimate: float, cost: float | None) -> None:
        self.reserved -= estimate
        if cost is not None:
            self.spent += cost
