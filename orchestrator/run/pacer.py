"""Pacing attempt starts on one backend (or one model of it) to the provider's meters.

A provider meters each limit with a token bucket that holds a minute's worth and refills
continuously (Anthropic documents it; OpenAI's remaining/reset headers describe the same). The
:class:`Pacer` keeps one such bucket per limit it knows: requests, tokens (input plus output, as
OpenAI and a configured ``tpm`` count them), and Anthropic's separate input and output tokens.
Each is a virtual-scheduling (GCRA) schedule: a start pushes its bucket's "theoretical arrival
time" forward by what it costs (``60 / rpm`` seconds a request), and may go when that time is at
most ``burst`` seconds ahead of now, less the start's own cost. So a fresh batch spends what the
bucket holds at once, then starts at the refill rate; ``burst`` 0 spaces every start evenly.

What the server says overrides our own count when it is the tighter one: ``remaining`` less
what we started after the attempt that reports it (still in flight, so not in its count) sets
the level. A quota that resets much sooner than a minute's bucket could refill means the
server meters shorter windows than its per-minute limit suggests: bursting would only earn
429s, so the pacer then spaces starts evenly, a little below the limit, for the rest of the batch
(the same happens on a second 429, see :class:`~orchestrator.run.limits.Gate`).

Before the server has said anything, a pacer that expects it to (``probe``) lets one attempt go
and holds the rest until that attempt's headers arrive, it ends, or :data:`_PROBE_WAIT` passes:
one latency, so that the first burst is sized by the server's own count, not a guess.

Decisions are pure arithmetic on trio's clock, so tests on the virtual clock are exact.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import attrs
import trio

from orchestrator.events import LimiterChanged, RateLimitInfo, Tokens

Notify = Callable[[LimiterChanged], Awaitable[None]]

# Waits shorter than this are ordinary pacing, not worth an event each.
_NOTABLE_WAIT = 1.0
_CATCH_UP = 0.05  # seconds of lateness a paced start may make up
_BUCKET_SHARE = 0.98  # of the provider's bucket that a burst may spend
_SMOOTH_SHARE = 0.98  # of the limit that even pacing keeps to once the server showed short windows
_PROBE_WAIT = 1.0  # longest wait for the first attempt's headers before the rest may go
# A reset this much shorter than a minute's bucket would take to refill means shorter windows
# (only judged when the bucket would need at least _SHORT_WINDOW_MIN seconds).
_SHORT_WINDOW_RATIO = 0.5
_SHORT_WINDOW_MIN = 2.0


@attrs.frozen
class Cost:
    """What one attempt is charged on each meter: ``tokens`` (input and output together),
    ``input`` (the input the provider counts: uncached) and ``output`` (the reply budget)."""

    tokens: int = 0
    input: int = 0
    output: int = 0


# Each meter: the RateLimitInfo field prefix, the LimiterChanged change name, and what it charges.
_METERS = (
    ("requests", "rpm", lambda cost: 1),
    ("tokens", "tpm", lambda cost: cost.tokens),
    ("input_tokens", "input_tpm", lambda cost: cost.input),
    ("output_tokens", "output_tpm", lambda cost: cost.output),
)


class _Meter:
    """One bucket: its limit a minute, its schedule, and what running attempts were charged."""

    __slots__ = ("change", "charge", "configured", "field", "limit", "tat")

    def __init__(self, field: str, change: str, charge: Callable[[Cost], int], limit: float | None) -> None:
        self.field = field
        self.change = change
        self.charge = charge
        self.configured = limit
        self.limit = limit
        self.tat = -math.inf  # when the bucket would be full again; -inf: full now


class Pacer:
    """Paces attempt starts to every limit it knows, with buckets of ``burst`` seconds' worth."""

    def __init__(
        self,
        name: str,
        rpm: float | None,
        tpm: float | None,
        notify: Notify,
        on_pause: Callable[[float], None] = lambda until: None,
        *,
        burst: float = 0.0,
        input_tpm: float | None = None,
        output_tpm: float | None = None,
        probe: bool = False,
    ) -> None:
        self.name = name
        self._on_pause = on_pause
        self._bucket = burst  # seconds of refill the provider's bucket holds, as configured
        # A burst spends a little less: our clock and the provider's meter never agree exactly.
        self.burst = burst * _BUCKET_SHARE
        self._share = 1.0  # of each limit that starts are paced to
        limits = (rpm, tpm, input_tpm, output_tpm)
        self._meters = [
            _Meter(field, change, charge, limit)
            for (field, change, charge), limit in zip(_METERS, limits, strict=True)
        ]
        self._requests, self._tokens, self._input, self._output = self._meters
        self._limited = self._with_limits()
        self._notify = notify
        self.paused_until = -math.inf
        self._starts = 0
        # What each attempt still running was charged and when it started, by start number,
        # oldest first.
        self._running: dict[int, tuple[Cost, float]] = {}
        self._lock = trio.Lock()  # trio's Lock is fair: waiters are served in arrival order
        self._first_word: trio.Event | None = trio.Event() if probe else None
        self._probe_sent_at: float | None = None

    def _with_limits(self) -> tuple[_Meter, ...]:
        """The meters that have a limit: the only ones a start is paced to or charged on (a
        backend with none, the common case of a local one, loops over nothing per attempt)."""
        return tuple(meter for meter in self._meters if meter.limit)

    @property
    def rpm(self) -> float | None:
        return self._requests.limit

    @property
    def tpm(self) -> float | None:
        return self._tokens.limit

    @property
    def input_tpm(self) -> float | None:
        return self._input.limit

    @property
    def output_tpm(self) -> float | None:
        return self._output.limit

    def paused(self) -> bool:
        """Whether a pause is in force now (the clock is only read if one was ever set)."""
        return self.paused_until != -math.inf and self.paused_until > trio.current_time()

    def _seconds(self, meter: _Meter, amount: float) -> float:
        """How long ``amount`` takes to refill at the pace kept to."""
        assert meter.limit
        return amount * 60.0 / (meter.limit * self._share)

    def ready_at(self, cost: Cost) -> float:
        """The earliest trio time a start costing ``cost`` may go."""
        ready = self.paused_until
        for meter in self._limited:
            own = self._seconds(meter, meter.charge(cost))
            ready = max(ready, meter.tat - max(self.burst - own, 0.0))
        return ready

    @property
    def running(self) -> int:
        """Attempts started and not yet released."""
        return len(self._running)

    async def acquire(self, cost: Cost | int | Callable[[], Cost]) -> int:
        """Wait for this start's turn, then charge it (``cost``: a :class:`Cost`, tokens, or a
        function that prices the start when it is looked at, for a price that may change while
        it waits); its start number, for :meth:`observe`, :meth:`charged` and :meth:`release`.
        The caller must release it when the attempt ends. Cancellation leaves nothing charged.

        When the start may go at once and nobody waits before it, it returns without a
        checkpoint: a yield per start would serialise a burst through the scheduler.
        """
        price = cost if callable(cost) else (lambda: cost if isinstance(cost, Cost) else Cost(tokens=cost))
        if self._first_word is not None:
            await self._await_first_word()
        number = self.start_nowait(price)
        if number is not None:
            return number
        async with self._lock:
            announced = False
            while True:
                now = trio.current_time()
                current = price()
                ready = self.ready_at(current)
                if ready <= now:
                    break
                # A pause was announced when it began; long pacing waits are announced here.
                if not announced and ready - now >= _NOTABLE_WAIT and ready != self.paused_until:
                    announced = True
                    await self._notify(
                        LimiterChanged(self.name, "pacing", None, ready, "waiting for the rate limit")
                    )
                await trio.sleep_until(ready)  # a pause may move ``ready`` meanwhile: look again
            # A start that waited in line books from the slot it waited for, not from when it got
            # its turn: a wake-up is ~1 ms late, and a handover of the lock a turn of the
            # scheduler (more on a busy machine), which at 3,000 rpm would slow the pace by 5% or
            # more. Never more than a little catch-up, so a stalled event loop does not turn into
            # a burst.
            return self._charge(max(ready, now - _CATCH_UP), current)

    def start_nowait(self, price: Callable[[], Cost]) -> int | None:
        """:meth:`acquire` for a start that may go now: its start number, charged ``price()``,
        when nobody waits before it, no first word is awaited and its meters and any pause let
        it go at once; else None, with nothing charged (the caller then awaits :meth:`acquire`).
        :meth:`acquire` itself starts this way, so the two decide alike."""
        if self._first_word is not None or self._lock.locked():
            return None
        now = trio.current_time()
        current = price()
        if self.ready_at(current) <= now:
            return self._charge(now, current)  # nobody waits: the start is on time
        return None

    async def _await_first_word(self) -> None:
        """The first caller goes at once; the others wait for the server's first word."""
        first = self._first_word
        assert first is not None
        if self._probe_sent_at is None:
            self._probe_sent_at = trio.current_time()
            return
        with trio.move_on_at(self._probe_sent_at + _PROBE_WAIT):
            await first.wait()
        self.heard()

    def heard(self) -> None:
        """The server has spoken (or the probe ended): nobody waits for its first word now."""
        if self._first_word is not None:
            self._first_word.set()
            self._first_word = None

    def charged(self, number: int) -> Cost:
        """What start ``number`` (still running) was charged."""
        return self._running[number][0]

    def _charge(self, start: float, cost: Cost) -> int:
        self._starts += 1
        self._running[self._starts] = (cost, start)
        for meter in self._limited:
            meter.tat = max(meter.tat, start) + self._seconds(meter, meter.charge(cost))
        return self._starts

    def release(self, number: int, used: Cost | None = None) -> None:
        """Start ``number`` has ended; ``used`` (if known) is what the provider counted on each
        meter: the difference from its charge goes back to (or is taken from) the buckets."""
        entry = self._running.pop(number, None)
        if self._probe_sent_at is not None:
            self.heard()  # the probe (or a later attempt) ended: its word will not come now
        if entry is None or used is None:
            return
        cost = entry[0]
        for meter in self._limited:
            if meter.field != "requests":
                meter.tat += self._seconds(meter, meter.charge(used) - meter.charge(cost))

    def _started_after(self, number: int | None, meter: _Meter) -> float:
        """What attempts started after start ``number`` and still running were charged on
        ``meter`` (None: not known which start reports; nothing is assumed)."""
        if number is None:
            return 0.0
        total = 0.0
        for later in reversed(self._running):
            if later <= number:
                break
            total += meter.charge(self._running[later][0])
        return total

    async def smooth(self, reason: str) -> None:
        """Pace evenly, a little below the limits, from now on (the provider meters shorter
        windows than a full bucket)."""
        if self._go_smooth():
            await self._notify(LimiterChanged(self.name, "burst", 0.0, None, reason))

    def _go_smooth(self) -> bool:
        """Turn bursting off; False if it was off already."""
        if self.burst <= 0:
            return False
        self.burst = self._bucket = 0.0
        self._share = _SMOOTH_SHARE
        # Even pacing starts from now: what a burst spent of a bucket the server does not keep
        # is no debt (a 429's Retry-After, or an empty quota, pauses on its own).
        now = trio.current_time()
        for meter in self._meters:
            meter.tat = min(meter.tat, now)
        return True

    async def pause(self, seconds: float, reason: str, *, announce: bool = True) -> None:
        """No new attempt starts for ``seconds`` (a server's Retry-After, an empty quota)."""
        change = self._pause(seconds, reason)
        if change is not None and announce:
            await self._notify(change)

    def _pause(self, seconds: float, reason: str) -> LimiterChanged | None:
        until = trio.current_time() + seconds
        if until <= self.paused_until:
            return None
        self.paused_until = until
        self._on_pause(until)
        return LimiterChanged(self.name, "paused", None, until, reason)

    async def observe(self, info: RateLimitInfo, number: int | None = None) -> None:
        """Adopt what the server announces to start ``number`` (if known): a lower limit than
        configured, how much of its quota remains, an empty bucket, or windows shorter than its
        limit's minute. Every change is made before the first announcement is awaited, so no
        start slips through on the old state."""
        changes = [change for meter in self._meters for change in self._adopt(meter, info, number)]
        self.heard()
        for change in changes:
            await self._notify(change)

    def _adopt(self, meter: _Meter, info: RateLimitInfo, number: int | None) -> list[LimiterChanged]:
        """What ``info`` says about ``meter``, applied; the changes worth announcing."""
        changes: list[LimiterChanged] = []
        limit = getattr(info, f"{meter.field}_limit")
        if not limit:
            return changes
        adopted = min(meter.configured or math.inf, limit)
        if adopted != meter.limit:
            meter.limit = adopted
            self._limited = self._with_limits()
            changes.append(LimiterChanged(self.name, meter.change, adopted, None, "announced by the server"))
        remaining = getattr(info, f"{meter.field}_remaining")
        reset = getattr(info, f"{meter.field}_reset_s")
        if remaining is None:
            return changes
        now = trio.current_time()
        refill_s = max(limit - remaining, 0) * 60.0 / limit
        short = reset is not None and refill_s >= _SHORT_WINDOW_MIN and reset < refill_s * _SHORT_WINDOW_RATIO
        if short and self._go_smooth():
            reason = (
                f"the server's {meter.field.replace('_', ' ')} quota resets in {reset:.3g}s, sooner than a "
                "minute's bucket refills: it meters shorter windows, so starts are evenly spaced"
            )
            changes.append(LimiterChanged(self.name, "burst", 0.0, None, reason))
        # The server counted up to this attempt's arrival, not the ones we sent since; its count
        # refills from then on. (A fixed window does not refill before its end: what that credits
        # in one latency is within the margin.)
        others = self._started_after(number, meter)
        used_s = max(limit - (remaining - others), 0.0) * 60.0 / limit
        counted_at = self._running[number][1] if number in self._running else now
        meter.tat = max(meter.tat, counted_at + used_s - (60.0 - self._bucket))
        if remaining <= 0 and reset:
            # One unit of a per-minute quota comes back in 60/limit seconds: enough to go on,
            # and the pacer spaces what follows. Routine for a paced batch near its limit: only
            # waits that matter are events.
            wait = min(reset, 60.0 / limit)
            paused = self._pause(wait, "the server's quota is used up")
            if paused is not None and wait >= _NOTABLE_WAIT:
                changes.append(paused)
        return changes


def counted(used: Tokens) -> Cost:
    """What the provider's meters count of an attempt's usage: every token on the combined
    meter; on the input meter the uncached input (cache reads do not count on current models);
    the output."""
    return Cost(tokens=used.total, input=used.input + used.cache_creation, output=used.output)
