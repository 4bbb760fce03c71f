"""Staying under a backend's rate limits: pacing, server-driven pauses, in-flight limits.

* :class:`~orchestrator.run.pacer.Pacer` models the provider's own meters (a token bucket per
  limit: requests, tokens, Anthropic's input and output tokens) and paces starts to them; see
  :mod:`orchestrator.run.pacer`.
* A 429/529 with Retry-After pauses the whole backend (every worker), not only the failed job;
  a second 429 on an attempt that started after the first came back, within a minute, means
  the provider enforces a shorter window than its announced limit suggests: the backend then
  paces evenly (no burst) for the rest of the batch.
* :class:`AdaptiveLimit` runs AIMD on the backend's in-flight limit: halve on a rate-limit or
  overload error (once per round of attempts), add one per round of successes.
* :class:`DerivedLimit` sets an HTTP backend's default in-flight limit by Little's law: the
  attempts in flight that the rate limit can keep busy are its rate times the observed
  latency; the limit follows that (with headroom) between the old fixed default and a ceiling.

Decisions are pure arithmetic on trio's clock, so tests on the virtual clock are exact.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable

import attrs
import trio

from orchestrator.errors import ErrorKind
from orchestrator.events import LimiterChanged, RateLimitInfo, Tokens
from orchestrator.run.pacer import Cost, Pacer, counted
from orchestrator.spec import BackendLimits

__all__ = ["AdaptiveLimit", "Budget", "Cost", "DerivedLimit", "Gate", "Pacer", "Slots", "Ticket"]

Notify = Callable[[LimiterChanged], Awaitable[None]]

# Error kinds that mean "too much load": they pause the backend and shrink its concurrency.
BACKPRESSURE_KINDS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED})
_SMOOTH_AFTER = 60.0  # two 429s this close together turn bursting off
_HEADROOM = 2.0  # in-flight limit over rate x latency: latencies vary, bursts start at once
_LATENCY_WEIGHT = 0.1  # of each new latency in the moving average
_DERIVED_STEP = 8  # a derived limit moves when the target is more than 1/8 away from it
_CACHE_WEIGHT = 0.5  # of each attempt's uncached share in the moving average


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

    async def apply(self, reason: str) -> None:
        tokens = max(self.floor, min(self.ceiling, int(self.value)))
        if tokens != self.slots.total:
            self.slots.total = tokens
            await self._notify(LimiterChanged(self.name, "concurrency", tokens, None, reason))

    async def overloaded(self, started_in_epoch: int) -> None:
        if started_in_epoch != self.epoch:
            return
        self.epoch += 1
        self.value = max(float(self.floor), self.value / 2)
        await self.apply("rate limited or overloaded: halved")

    @property
    def at_ceiling(self) -> bool:
        """Whether the limit is as high as it goes: a success then changes nothing."""
        return self.value >= self.ceiling

    async def succeeded(self) -> None:
        if not self.at_ceiling:
            self.value = min(float(self.ceiling), self.value + 1.0 / max(self.value, 1.0))
            await self.apply("successes: one more")


class DerivedLimit:
    """An in-flight limit by Little's law: attempts in flight = rate x time in flight.

    Starts at ``floor`` (the fixed default it replaces, so a batch is never held tighter than
    before) and follows ``headroom x rate x latency`` up to ``ceiling`` as latencies are seen;
    without a known rate it stays where it is. Pure: the caller passes rates and latencies in.
    """

    def __init__(self, floor: int, ceiling: int) -> None:
        self.floor = max(1, min(floor, ceiling))
        self.ceiling = ceiling
        self.latency: float | None = None

    def observe(self, seconds: float) -> None:
        """One attempt's time in flight."""
        if self.latency is None:
            self.latency = seconds
        else:
            self.latency += _LATENCY_WEIGHT * (seconds - self.latency)

    def target(self, per_second: float | None) -> int:
        """The limit for ``per_second`` attempts a second (None: no known rate)."""
        if per_second is None or self.latency is None:
            return self.floor
        wanted = math.ceil(_HEADROOM * per_second * self.latency)
        return max(self.floor, min(self.ceiling, wanted))


@attrs.define(slots=True, eq=False)
class Ticket:
    """One attempt's passage through a :class:`Gate`: what it was charged, when it started, and
    (set by the caller before :meth:`Gate.leave`) the tokens it used."""

    cost: Cost
    epoch: int
    model: str | None
    started: float
    numbers: tuple[int, int | None]
    """Its start numbers at the backend's pacer and at its model's (if that has one)."""
    used: Tokens | None = None


class Gate:
    """Everything that decides when an attempt on one backend may start: its in-flight limit
    (adaptive, derived or fixed), its pacer, and the pacers of single models."""

    def __init__(
        self,
        name: str,
        limits: BackendLimits,
        ceiling: int | None,
        notify: Notify,
        on_pause: Callable[[float], None] = lambda until: None,
        *,
        refund: bool = True,
        probe: bool = False,
        derive_up_to: int | None = None,
    ) -> None:
        """``refund``: whether tokens an attempt reserved and did not use go back to the token
        pace (the server gives them back), or stay spent (it charged the whole reservation).
        ``probe``: the backend's server announces its limits; the first attempt's headers size
        the first burst (see :mod:`orchestrator.run.pacer`). ``derive_up_to``: the in-flight
        limit is not configured: ``ceiling`` is where it starts, and Little's law may raise it
        up to this (see :class:`DerivedLimit`)."""
        self.name = name
        self.refund = refund
        self._notify = notify
        self.adaptive: AdaptiveLimit | None = None
        self.slots: Slots | None = None
        self.derived: DerivedLimit | None = None
        if ceiling is not None and derive_up_to is not None and derive_up_to > ceiling:
            self.derived = DerivedLimit(ceiling, derive_up_to)
        if ceiling is not None and limits.adaptive:
            self.adaptive = AdaptiveLimit(name, ceiling, limits.min_concurrency, notify)
            self.slots = self.adaptive.slots
        elif ceiling is not None:
            self.slots = Slots(ceiling)
        burst = limits.burst_s
        self.pacer = Pacer(
            name,
            limits.rpm,
            limits.tpm,
            notify,
            on_pause,
            burst=burst,
            input_tpm=limits.input_tpm,
            output_tpm=limits.output_tpm,
            probe=probe,
        )
        self.models = {
            model: Pacer(
                f"{name}/{model}",
                rate.rpm,
                rate.tpm,
                notify,
                burst=burst,
                input_tpm=rate.input_tpm,
                output_tpm=rate.output_tpm,
            )
            for model, rate in limits.models.items()
        }
        self._last_429 = -math.inf
        self._uncached = 1.0  # share of the input the provider counted, lately

    def has_room(self) -> bool:
        """Whether an attempt could start now without waiting for a slot or a pause."""
        if self.slots is not None and not self.slots.has_room():
            return False
        return not self.pacer.paused()

    def cost(self, tokens: int, output: int | None) -> Cost:
        """What an attempt estimated at ``tokens`` (input and output budget) with a reply
        budget of ``output`` is charged: its input as uncached as lately seen (a shared cached
        prefix is not counted by the provider). Without ``output`` the whole estimate is
        charged to each meter."""
        if output is None:
            return Cost(tokens, tokens, tokens)
        output = min(output, tokens)
        return Cost(tokens, math.ceil((tokens - output) * self._uncached), output)

    async def enter(self, tokens: int, model: str | None, output: int | None = None) -> Ticket:
        """Wait for a slot and the rate limits; the caller must :meth:`leave` afterwards, also
        on cancellation (which may happen here: then nothing is held)."""
        if self.slots is not None:
            try:
                self.slots.acquire_nowait()  # the common case, without a trip through the scheduler
            except trio.WouldBlock:
                await self.slots.acquire()
        pacer = self.models.get(model) if model is not None and self.models else None
        epoch = self.adaptive.epoch if self.adaptive is not None else 0
        # Priced when it may go: the uncached share learned meanwhile applies.
        price = functools.partial(self.cost, tokens, output)
        # The common case, a start the backend's pacer lets go at once, passes without an await:
        # acquire decides the same way (it begins with start_nowait) but costs a coroutine.
        number = self.pacer.start_nowait(price)
        try:
            if number is None:
                number = await self.pacer.acquire(price)
            cost = self.pacer.charged(number)
            own = await pacer.acquire(cost) if pacer is not None else None
        except BaseException:
            if number is not None:
                self.pacer.release(number)
            if self.slots is not None:
                self.slots.release()
            raise
        return Ticket(cost, epoch, model, trio.current_time(), (number, own))

    def leave(self, ticket: Ticket) -> None:
        if self.slots is not None:
            self.slots.release()
        used: Cost | None = None
        if ticket.used is not None:
            used = counted(ticket.used)
            if not self.refund:
                used = attrs.evolve(used, tokens=max(used.tokens, ticket.cost.tokens))
            seen = ticket.used.input + ticket.used.cache_creation + ticket.used.cache_read
            if seen:
                share = used.input / seen
                self._uncached += _CACHE_WEIGHT * (share - self._uncached)
        number, own = ticket.numbers
        self.pacer.release(number, used)
        pacer = self.models.get(ticket.model) if ticket.model is not None else None
        if pacer is not None and own is not None:
            pacer.release(own, used)
        if self.derived is not None:
            self.derived.observe(trio.current_time() - ticket.started)

    def _rate(self, cost: Cost) -> float | None:
        """Attempts a second the backend's limits allow, for attempts like ``cost``."""
        pacer = self.pacer
        rates = [
            limit / 60.0 / amount
            for limit, amount in (
                (pacer.rpm, 1),
                (pacer.tpm, cost.tokens),
                (pacer.input_tpm, cost.input),
                (pacer.output_tpm, cost.output),
            )
            if limit and amount
        ]
        return min(rates) if rates else None

    async def succeeded(self, ticket: Ticket | None = None) -> None:
        if ticket is not None and self.derived is not None:
            await self._follow_latency(ticket)
        if self.adaptive is not None and not self.adaptive.at_ceiling:  # no coroutine per success
            await self.adaptive.succeeded()

    async def _follow_latency(self, ticket: Ticket) -> None:
        """Move the derived in-flight limit to what the rate and latency now call for."""
        assert self.derived is not None
        target = self.derived.target(self._rate(ticket.cost))
        current = (
            self.adaptive.ceiling if self.adaptive is not None else self.slots.total if self.slots else 0
        )
        if abs(target - current) <= current // _DERIVED_STEP:
            return  # latencies wander: a small move is not worth a change (and an event)
        reason = "the rate limit x the latency seen (Little's law)"
        if self.adaptive is not None:
            if target != self.adaptive.ceiling:
                grew = self.adaptive.value >= self.adaptive.ceiling
                self.adaptive.ceiling = target
                self.adaptive.value = float(target) if grew else min(self.adaptive.value, target)
                await self.adaptive.apply(reason)
        elif self.slots is not None and target != self.slots.total:
            self.slots.total = target
            await self._notify(LimiterChanged(self.name, "concurrency", target, None, reason))

    async def failed(
        self, ticket: Ticket, kind: ErrorKind, retry_after: float | None, max_pause: float
    ) -> None:
        """A rate-limit or overload error pauses the backend (Retry-After, at most ``max_pause``
        seconds: the job's ``retry.max_retry_after``) and shrinks its in-flight limit."""
        if kind not in BACKPRESSURE_KINDS:
            return
        if kind == "rate_limited":
            now = trio.current_time()
            # An attempt sent before the last 429 came back is an echo of it, not a second one.
            if ticket.started >= self._last_429 and now - self._last_429 < _SMOOTH_AFTER:
                reason = "a second 429 within a minute: even pacing for the rest of the batch"
                for pacer in (self.pacer, *self.models.values()):
                    await pacer.smooth(reason)
            if ticket.started >= self._last_429:
                self._last_429 = now
        if retry_after:
            wait = min(retry_after, max_pause)
            await self.pacer.pause(wait, f"{kind}: the server asked to wait {retry_after:g}s")
        if self.adaptive is not None:
            await self.adaptive.overloaded(ticket.epoch)

    async def observe(self, model: str | None, info: RateLimitInfo, ticket: Ticket | None = None) -> None:
        """What the server said in answer to ``ticket``'s attempt (None: not known which)."""
        pacer = self.models.get(model) if model is not None else None
        if pacer is not None:
            await pacer.observe(info, ticket.numbers[1] if ticket is not None else None)
        else:
            await self.pacer.observe(info, ticket.numbers[0] if ticket is not None else None)


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
