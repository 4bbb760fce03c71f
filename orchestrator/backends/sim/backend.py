"""``sim``: a seeded, deterministic simulated model with fault injection.

For tests, demos and benchmarks. Each attempt is first *planned* by a pure function of
(batch seed, job id, attempt number) and then played back with ``trio.sleep``, so a run under
trio's virtual clock is exact and a rerun with the same seed is identical.

Faults, chosen per attempt from ``faults`` (attempt 1 takes the first entry, ...) or drawn with
``fault_rates``:

``rate_limit``   429 before the stream, with ``retry_after`` seconds
``overload``     529 before the stream
``server_error`` 500 before the stream
``mid_stream``   the connection drops after ``fault_after_tokens`` tokens
``stall``        the stream hangs for ever after ``fault_after_tokens`` tokens
``fatal``        400 bad request: never retried
``auth``         401 invalid API key: never retried (and, repeated, halts the backend)

A job with an ``output_schema`` gets a JSON reply made from its schema instead of words; the
``output`` option picks, per attempt like ``faults``, a ``valid`` one (the default), an
``invalid`` one (JSON the schema refuses) or ``not_json``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, TypeAlias

import attrs
import trio

from orchestrator.backends.base import Emit
from orchestrator.backends.request import estimated_input_tokens
from orchestrator.backends.sim.server import SimServer
from orchestrator.backends.sim.structured import REPLIES, structured_reply
from orchestrator.backends.status import kind_for_status
from orchestrator.errors import ErrorKind, RetryableError, error_for
from orchestrator.events import (
    SessionStarted,
    StreamFinished,
    TextDelta,
    Tokens,
    ToolCall,
    ToolResult,
    UsageReported,
)
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec
from orchestrator.timers import Timeline


def simulated_model(model: str | None) -> str:
    """The model name the simulator reports: always says "simulated", so no one takes its made-up
    text and cost for a real model's."""
    return f"{model} (simulated)" if model else "simulated"


FAULTS = ("rate_limit", "overload", "server_error", "mid_stream", "stall", "fatal", "auth")
_ACCEPTED_FAULTS = ("ok", *FAULTS)

_WORDS = (
    "the quick answer is that streams merge into one bus while retries keep going through rate limits "
    "and every job ends once with a result the log keeps so nothing is lost or paid for twice when a "
    "batch resumes after a crash or an interrupt"
).split()


@attrs.frozen
class Options:
    """Per-job behaviour of the simulated model (``[defaults.sim]`` or ``sim = {...}`` on a job)."""

    ttft: float = attrs.field(default=0.3, metadata={"min": 0})
    tokens_per_s: float = attrs.field(default=40.0, metadata={"min": 0})
    """0 streams as fast as the bus takes it."""
    reply_tokens: int = attrs.field(default=24, metadata={"min": 0})
    reply_tokens_max: int | None = attrs.field(default=None, metadata={"min": 0})
    """When set, each job's reply length is drawn from [reply_tokens, reply_tokens_max]."""
    latency_jitter: float = attrs.field(default=0.0, metadata={"min": 0, "max": 1})
    """Scales ttft and token gaps by a per-attempt factor drawn from [1 - j, 1 + j]."""
    tool_calls: int = attrs.field(default=0, metadata={"min": 0})
    text: str | None = attrs.field(default=None, metadata={"text": True})  # free text, as a model's
    """A fixed reply (split on spaces into tokens) instead of generated words."""
    faults: tuple[str, ...] = attrs.field(default=(), metadata={"choices": _ACCEPTED_FAULTS})
    fault_rates: Mapping[str, float] = attrs.field(
        factory=dict, metadata={"keys": FAULTS, "min": 0, "max": 1}
    )
    output: tuple[str, ...] = attrs.field(default=(), metadata={"choices": REPLIES, "later": True})
    """For a job with an ``output_schema``: each attempt's kind of JSON reply, in order
    (``valid``, ``invalid``, ``not_json``); attempts past the list reply ``valid``."""
    retry_after: float | None = attrs.field(default=1.0, metadata={"min": 0})
    fault_after_tokens: int = attrs.field(default=3, metadata={"min": 0})
    input_price: float = attrs.field(default=1.0, metadata={"min": 0})
    """US dollars per million input tokens."""
    output_price: float = attrs.field(default=5.0, metadata={"min": 0})


@attrs.frozen
class Settings:
    """Batch-wide ``[backends.sim]`` settings: the simulated server's own rate limits."""

    concurrency: int | None = attrs.field(default=None, metadata={"min": 1})
    server_rpm: float | None = attrs.field(default=None, metadata={"gt": 0})
    server_tpm: float | None = attrs.field(default=None, metadata={"gt": 0})
    server_change_at: float | None = attrs.field(default=None, metadata={"min": 0})
    """Seconds after the start at which the server's limits become the ``*_after`` ones."""
    server_rpm_after: float | None = attrs.field(default=None, metadata={"gt": 0})
    server_tpm_after: float | None = attrs.field(default=None, metadata={"gt": 0})


@attrs.define
class Reply:
    """A reply's stream pieces: the first word, then each further word after its space.

    Drawn words are made as they are played back, from the job's own draws, so a reply of
    10^10 tokens costs nothing up front; ``pieces`` holds a fixed reply (``text``) instead.
    Two replies are equal when they yield the same pieces.

    A value nothing changes, yet not a frozen class: a frozen class sets each field through
    ``object.__setattr__``, which made building one cost three times as much, once per attempt.
    """

    count: int
    key: tuple[int, str] = (0, "")  # (batch seed, job id): the draws the words come from
    skip: int = 0  # draws taken before the words (the reply's length)
    pieces: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[str]:
        if self.pieces is not None:
            yield from self.pieces
            return
        random = _Draws(*self.key).random
        for _ in range(self.skip):
            random()
        words, choices = _WORDS, len(_WORDS)
        if self.count:
            yield words[int(random() * choices)]
        for _ in range(self.count - 1):
            yield " " + words[int(random() * choices)]


class AttemptPlan(NamedTuple):
    """Everything one simulated attempt will do, decided up front.

    A named tuple, not an attrs class: one is made per attempt, and a tuple is the cheapest
    immutable value to make.
    """

    fault: str | None
    tokens: Reply
    ttft: float
    token_gap: float
    tool_calls: int
    input_tokens: int

    @property
    def waits(self) -> bool:
        """Whether playing it back sleeps at all: before the first token, or between two."""
        return self.ttft > 0 or (self.token_gap > 0 and (len(self.tokens) > 1 or self.tool_calls > 0))


class _Draws:
    """Uniform draws in [0, 1) determined by a key: BLAKE2b in counter mode, 8 draws per hash.

    Stable across processes and Python versions (unlike ``hash``), and a new key costs one hash
    where seeding a Mersenne Twister costs several microseconds: the sim plans an attempt per job,
    and a 100k-job benchmark should measure the orchestrator, not the seeding.
    """

    __slots__ = ("_block", "_key", "_left", "_pool")

    def __init__(self, *key: object) -> None:
        self._key = repr(key).encode()
        self._block = 0
        self._pool: tuple[int, ...] = ()
        self._left = 0  # draws left in the pool, taken from its end

    def random(self) -> float:
        """The next draw. Each hash's eight values are drawn from the last to the first, the
        order the draws have always had (seeded runs stay the same); a tuple and a count make
        no list per hash."""
        left = self._left
        if not left:
            block = self._block.to_bytes(4, "little")
            self._pool = _UNPACK_8(hashlib.blake2b(self._key + block).digest())
            self._block += 1
            left = 8
        self._left = left = left - 1
        return (self._pool[left] >> 11) * _TO_UNIT

    def randint(self, low: int, high: int) -> int:
        """An integer in [low, high], both included."""
        return low + min(high - low, int(self.random() * (high - low + 1)))


_TO_UNIT = 1.0 / (1 << 53)
_UNPACK_8 = struct.Struct("<8Q").unpack
_CHECKPOINT_EVERY = 1024  # stream pieces between two checkpoints of a stream that never sleeps


def plan_attempt(job: JobSpec, options: Options, attempt: int, seed: int) -> AttemptPlan:
    """Plan attempt ``attempt`` of ``job``: a pure function of its arguments."""
    rng = _Draws(seed, job.id, attempt) if options.fault_rates or options.latency_jitter else None
    fault: str | None = None
    if attempt <= len(options.faults):
        fault = None if options.faults[attempt - 1] == "ok" else options.faults[attempt - 1]
    elif rng is not None:
        for name in FAULTS:
            rate = options.fault_rates.get(name, 0.0)
            if rate and rng.random() < rate:
                fault = name
                break
    # The reply depends on the job, not the attempt, so a retry says the same thing (but for a
    # structured reply, whose kind the ``output`` option sets per attempt).
    if job.output_schema is not None:
        kind = options.output[attempt - 1] if attempt <= len(options.output) else "valid"
        text = structured_reply(job.output_schema, kind)
        pieces = tuple(text[i : i + 8] for i in range(0, len(text), 8))
        tokens = Reply(len(pieces), pieces=pieces)
    elif options.text is not None:
        words = options.text.split(" ")
        # Stream pieces: the first word, then every further non-empty word after its space.
        pieces = (words[0], *[" " + word for word in words[1:] if word]) if words else ()
        pieces = pieces if pieces != ("",) else ()
        tokens = Reply(len(pieces), pieces=pieces)
    else:
        count, skip = options.reply_tokens, 0
        if options.reply_tokens_max is not None and options.reply_tokens_max > count:
            count, skip = _Draws(seed, job.id).randint(count, options.reply_tokens_max), 1
        tokens = Reply(count, (seed, job.id), skip)
    scale = 1.0 + options.latency_jitter * (2 * rng.random() - 1) if rng is not None else 1.0
    gap = scale / options.tokens_per_s if options.tokens_per_s > 0 else 0.0
    # Positional, in field order (fault, tokens, ttft, token_gap, tool_calls, input_tokens).
    return AttemptPlan(
        fault, tokens, options.ttft * scale, gap, options.tool_calls, estimated_input_tokens(job)
    )


# The HTTP status and message each injected fault plays; the status names its kind.
_FAULTS = {
    "rate_limit": (429, "429 rate limited (simulated)"),
    "overload": (529, "529 overloaded (simulated)"),
    "server_error": (500, "500 internal server error (simulated)"),
    "fatal": (400, "400 bad request (simulated)"),
    "auth": (401, "401 invalid x-api-key (simulated)"),
}


def _raise_before_stream(fault: str, options: Options) -> None:
    if fault in _FAULTS:
        status, message = _FAULTS[fault]
        retry_after = options.retry_after if fault == "rate_limit" else None
        raise error_for(kind_for_status(status), message, retry_after=retry_after)


class SimClock:
    """One timer task for every simulated stream of the batch.

    ``trio.sleep`` costs a cancel scope and a raised ``Cancelled`` per call; with thousands of
    simulated streams that overhead would swamp what the benchmarks measure. Sleepers here park
    their task in one heap, and the timer task reschedules each when it comes due. Exact under
    trio's virtual clock.
    """

    def __init__(self) -> None:
        # Each sleeper is a one-item list, so that a cancelled one can blank its task in place.
        self._timeline: Timeline[list[trio.lowlevel.Task | None]] = Timeline()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``; cancellable like ``trio.sleep`` (the wake-up is then dropped)."""
        if seconds <= 0:
            return
        sleeper: list[trio.lowlevel.Task | None] = [trio.lowlevel.current_task()]
        self._timeline.push(trio.current_time() + seconds, sleeper)

        def abort(_: Any) -> trio.lowlevel.Abort:
            sleeper[0] = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self) -> None:
        reschedule = trio.lowlevel.reschedule
        while True:
            for (task,) in self._timeline.pop_due(trio.current_time()):
                if task is not None:
                    reschedule(task)
            await self._timeline.sleep()


_DEFAULT_OPTIONS = Options()


class SimBackend:
    """Plays back :func:`plan_attempt` plans. Cancellation-safe: it holds no resources."""

    def __init__(self, seed: int, clock: SimClock, server: SimServer | None = None) -> None:
        self.seed = seed
        self.clock = clock
        self.server = server

    def estimate(self, job: JobSpec) -> tuple[int, float]:
        """Tokens and cost of one attempt, at most (the reply's longest possible length)."""
        options = job.options if isinstance(job.options, Options) else Options()
        reply = len(options.text.split(" ")) if options.text is not None else options.reply_tokens
        if options.text is None and options.reply_tokens_max is not None:
            reply = max(reply, options.reply_tokens_max)
        prompt = estimated_input_tokens(job)
        return prompt + reply, (prompt * options.input_price + reply * options.output_price) / 1e6

    async def stream(self, job: JobSpec, attempt: int, emit: Emit) -> None:
        options: Options = job.options if isinstance(job.options, Options) else _DEFAULT_OPTIONS
        plan = plan_attempt(job, options, attempt, self.seed)
        start = trio.current_time()
        verdict = None
        if self.server is not None:
            verdict = self.server.admit(start, plan.input_tokens + len(plan.tokens))
            if not verdict.admitted:
                message = f"429 rate limited by the simulated server: retry after {verdict.retry_after:.3f}s"
                raise RetryableError(message, kind=kind_for_status(429), retry_after=verdict.retry_after)
        sleep = self.clock.sleep
        if plan.ttft > 0:
            await sleep(plan.ttft)
        if plan.fault is not None:
            _raise_before_stream(plan.fault, options)
        if verdict is not None:
            await emit(verdict.info)
        session_id = f"sim-{job.id}-{attempt}"
        await emit(SessionStarted(session_id, simulated_model(job.model)))
        # Without gaps nothing below sleeps, and emit only waits on a full bus: a checkpoint
        # every _CHECKPOINT_EVERY pieces keeps even an endless reply cancellable.
        checkpoint = trio.lowlevel.checkpoint
        gap = plan.token_gap
        for n in range(plan.tool_calls):
            call_id = f"call_{job.id}_{n}"
            await emit(ToolCall(call_id=call_id, name="lookup", input={"query": job.prompt[:40], "n": n}))
            await sleep(gap)
            await emit(ToolResult(call_id=call_id, content=f"result {n}"))
            if not gap and n % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                await checkpoint()
        fault_at = options.fault_after_tokens if plan.fault in ("mid_stream", "stall") else -1
        reply = plan.tokens
        if gap or fault_at >= 0:
            for i, token in enumerate(reply):
                if i == fault_at:
                    await _fault_mid_stream(plan.fault)
                if gap:
                    if i:
                        await sleep(gap)
                elif i % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                    await checkpoint()
                await emit(TextDelta(token))
            if fault_at >= len(reply):
                await _fault_mid_stream(plan.fault)
        else:  # every piece at once (the common case of a benchmark)
            for i, token in enumerate(reply):
                if i % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                    await checkpoint()
                await emit(TextDelta(token))
        tokens = Tokens(plan.input_tokens, len(reply))
        cost = (tokens.input * options.input_price + tokens.output * options.output_price) / 1e6
        await emit(UsageReported(tokens))
        duration = round(trio.current_time() - start, 6)
        # Positional (stop reason, tokens, cost, duration, turns, session): one per attempt.
        await emit(StreamFinished("end_turn", tokens, cost, duration, 1 + plan.tool_calls, session_id))
        if not plan.waits:
            # A stream with no gaps never yielded; let the rest of the batch run.
            await checkpoint()


async def _fault_mid_stream(fault: str | None) -> None:
    if fault == "stall":
        await trio.sleep_forever()
    raise RetryableError("connection reset mid-stream (simulated)", kind=ErrorKind.CONNECTION)


# A name the kind's methods can annotate with (inside its body, Settings is an attribute).
SimSettings: TypeAlias = Settings


class _Kind:
    name = "sim"
    Options = Options
    Settings = Settings
    default_concurrency: int | None = None

    def preflight(self, settings: SimSettings, jobs: Sequence[Alike]) -> list[str]:
        return []

    @asynccontextmanager
    async def _open(self, settings: SimSettings, seed: int) -> AsyncIterator[SimBackend]:
        clock = SimClock()
        server = None
        if settings.server_rpm or settings.server_tpm:
            server = SimServer(
                settings.server_rpm,
                settings.server_tpm,
                start=trio.current_time(),
                change_at=settings.server_change_at,
                rpm_after=settings.server_rpm_after,
                tpm_after=settings.server_tpm_after,
            )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(clock.run)
            yield SimBackend(seed, clock, server)
            nursery.cancel_scope.cancel()

    def open(self, settings: SimSettings, *, seed: int) -> Any:
        return self._open(settings, seed)


KIND = _Kind()
