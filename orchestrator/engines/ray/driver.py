"""The driver side of the Ray engine: attempts gathered into shards, shards' streams pumped back.

The runner calls :meth:`RemoteBackend.stream` for an attempt that has passed its gates, exactly
as it calls a local backend. The attempt joins the :class:`ShardBatcher`'s pending list; the
batcher submits up to ``shard_size`` pending attempts as one Ray streaming generator task
(:func:`~orchestrator.engines.ray.shard.run_shard`) and runs one pump per shard. A pump takes the
shard's next batch in a worker thread (``trio.to_thread.run_sync`` under the batcher's own
limiter: the trio loop never waits on Ray) and hands each attempt its messages; the attempt
emits them through the runner's ``emit`` (tagging, seq, watchdog and limits stay the driver's).

Each backend has a desk on the cluster (:mod:`.desk`) where its attempts ask for start permits,
so rate limits hold where requests start. When the runner gives up on one attempt (its timeout,
the idle watchdog, the hard spend cap), :meth:`ShardBatcher.stream` is cancelled and tells the
desk, and the shard running the attempt stops it.

Ray never retries a shard (``max_retries=0``): a replayed stream would report some jobs twice
and others never. When a shard is lost (its worker or node died, it ran out of memory, it was
cancelled), each of its attempts that has not ended raises a retryable ``worker_lost`` error,
and the runner's retry policy decides, against that job's own budget, whether it runs again.

Task layout (inside the engine's nursery, which outlives the batch's attempts)::

    batcher ── submit loop ── one pump per shard in flight
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import trio

from orchestrator.backends.base import Emit
from orchestrator.backends.request import attempt_estimate
from orchestrator.diagnostics import logger
from orchestrator.engines.ray.shard import AttemptEnded, Message, ShardAttempt, run_shard
from orchestrator.errors import ErrorKind, FatalError, RetryableError
from orchestrator.events import RateLimitInfo, StreamEvent
from orchestrator.run.job import Failure
from orchestrator.run.limits import BACKPRESSURE_KINDS
from orchestrator.spec import JobSpec

GATHER_SECONDS = 0.01  # how long a shard waits for more attempts once it has its first...
# ...or, when a backend is paced (rpm, tpm), this long: paced attempts trickle in, and a shard
# each would mean a worker process each. The desk paces their starts, so waiting costs no burst.
PACED_GATHER_SECONDS = 0.25
# How long the shards get, once the batch is over, to stop the attempts the runner gave up on
# (a CLI gets SIGTERM, then SIGKILL 5 s later) before they are killed with whatever they started.
WIND_DOWN_SECONDS = 10.0
_INBOX = 64  # message lists an attempt may have waiting before its shard's pump waits
_log = logger("orchestrator.engines.ray.driver")


class ShardBatcher:
    """Gathers attempts into shards, submits them to Ray and routes their messages back."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        seed: int,
        shard_size: int,
        max_shards: int,
        desks: Mapping[str, Any] | None = None,
        gather: float = GATHER_SECONDS,
        paced: frozenset[str] = frozenset(),
    ) -> None:
        """``desks``: each backend's desk (an actor handle); None: attempts start as soon as
        their shard runs, and an attempt given up on runs on to its end or its timeout.
        ``gather``: how long a shard waits for more attempts once it has its first.
        ``paced``: the backends with rate limits configured; their attempts ask their desk for
        start permits, and so do a backend's once its server has announced limits or refused
        a request for load (until then its desk would grant every permit at once)."""
        import ray

        self._ray = ray
        self._remote = ray.remote(run_shard)
        self._settings = settings
        self._seed = seed
        self.shard_size = shard_size
        self._gather = gather
        self._desks = desks or {}
        self._paced = set(paced)
        self._keys = itertools.count()
        self._shards = itertools.count()
        self._shard_of: dict[int, int] = {}  # the attempts sent out: key → their shard
        self._pending_send, self._pending = trio.open_memory_channel[ShardAttempt](math.inf)
        self._inboxes: dict[int, trio.MemorySendChannel[list[StreamEvent | AttemptEnded]]] = {}
        self._limiter = trio.CapacityLimiter(max_shards)
        self.shards_submitted = 0
        self._running = 0  # pumps (shards) in flight
        self._pump_ended = trio.Event()

    async def stream(self, job: JobSpec, attempt: int, emit: Emit, tokens: int = 0) -> None:
        """Run one attempt on the cluster (its start permit reserving ``tokens``), emitting its
        events here in order; raises its failure as the backend did (a lost shard: a retryable
        ``worker_lost``). Cancelled, the attempt's further events are dropped and, once it has
        been sent out, its shard is told to stop it (its backend ends its process)."""
        key = next(self._keys)
        send, receive = trio.open_memory_channel[list[StreamEvent | AttemptEnded]](_INBOX)
        self._inboxes[key] = send
        ended = False
        try:
            self._pending_send.send_nowait(ShardAttempt(key, job, attempt, tokens))
            async with receive:
                async for messages in receive:
                    for message in messages:
                        if type(message) is AttemptEnded:
                            ended = True
                            failure = message.failure
                            if failure is not None and failure.kind in BACKPRESSURE_KINDS:
                                self._paced.add(job.backend)
                            _raise(message)
                            return
                        if type(message) is RateLimitInfo:
                            self._paced.add(job.backend)
                        await emit(message)  # type: ignore[arg-type]
            ended = True
            raise RetryableError("the shard ended without this attempt's end", kind=ErrorKind.WORKER_LOST)
        finally:
            self._inboxes.pop(key, None)
            shard = self._shard_of.pop(key, None)
            desk = self._desks.get(job.backend)
            if not ended and shard is not None and desk is not None:
                desk.cancel.remote(shard, key)  # a message, not waited for

    async def run(self) -> None:
        """Submit shards as attempts arrive, until cancelled; cancelled, it cancels (kills) every
        shard still in flight on the cluster, each pump its own."""
        async with trio.open_nursery() as nursery:
            while True:
                shard = [await self._pending.receive()]
                with trio.move_on_after(self._gather):
                    while len(shard) < self.shard_size:
                        shard.append(await self._pending.receive())
                while len(shard) < self.shard_size:  # whatever else is already waiting
                    try:
                        shard.append(self._pending.receive_nowait())
                    except trio.WouldBlock:
                        break
                # An attempt cancelled while it waited (a stop, a timeout) is not sent at all.
                shard = [attempt for attempt in shard if attempt.key in self._inboxes]
                if shard:
                    number = next(self._shards)
                    for attempt in shard:
                        self._shard_of[attempt.key] = number
                    nursery.start_soon(self._pump, number, shard)

    async def wind_down(self, grace: float = WIND_DOWN_SECONDS) -> None:
        """The batch is over: wait up to ``grace`` seconds (shielded) for the shards in flight to
        end by themselves. Every attempt the runner gave up on has been told to stop, and a shard
        ends once its backends have ended their processes; a shard killed instead (``run``
        cancelled) would leave its CLIs' children behind."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + grace):
            while self._running:
                self._pump_ended = trio.Event()
                await self._pump_ended.wait()

    def _submit(self, number: int, shard: list[ShardAttempt]) -> Any:
        names = {attempt.job.backend for attempt in shard}
        settings = {name: self._settings[name] for name in names}
        desks = {name: self._desks[name] for name in names if name in self._desks}
        # Never retried by Ray: a replayed stream would splice new output into the old one.
        options = self._remote.options(
            num_returns="streaming", max_retries=0, num_cpus=0, resources={"llm_slots": len(shard)}
        )
        self.shards_submitted += 1
        paced = frozenset(names & self._paced)
        return options.remote(settings, self._seed, shard, desks, number, paced)

    async def _pump(self, number: int, shard: list[ShardAttempt]) -> None:
        """Deliver one shard's messages to its attempts; a lost shard ends the rest as lost."""
        generator = self._submit(number, shard)
        open_keys = {attempt.key for attempt in shard}
        lost: str | None = None
        finished = False
        self._running += 1
        try:
            while open_keys:
                outcome = await trio.to_thread.run_sync(
                    _next_batch, self._ray, generator, limiter=self._limiter, abandon_on_cancel=True
                )
                if outcome is None:
                    break
                if isinstance(outcome, str):
                    lost = outcome
                    break
                await self._deliver(outcome, open_keys)
            finished = True
        finally:
            self._running -= 1
            self._pump_ended.set()
            if not finished:  # nobody reads the shard any more; it must not run on
                self._ray.cancel(generator, force=True)
        if open_keys:
            message = lost or "the shard ended early"
            _log.warning("shard lost", attempts=len(open_keys), reason=message)
            ended: list[StreamEvent | AttemptEnded] = [AttemptEnded(_lost(message))]
            for key in open_keys:
                await self._send(key, ended)

    async def _deliver(self, batch: list[Message], open_keys: set[int]) -> None:
        by_key: dict[int, list[StreamEvent | AttemptEnded]] = {}
        for key, message in batch:
            by_key.setdefault(key, []).append(message)
            if type(message) is AttemptEnded:
                open_keys.discard(key)
        for key, messages in by_key.items():
            await self._send(key, messages)

    async def _send(self, key: int, messages: list[StreamEvent | AttemptEnded]) -> None:
        inbox = self._inboxes.get(key)
        if inbox is None:  # the attempt was cancelled: nobody listens
            return
        try:
            await inbox.send(messages)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _next_batch(ray: Any, generator: Any) -> list[Message] | str | None:
    """In a worker thread: the shard's next batch, None at its end, or why it was lost."""
    try:
        batch: list[Message] = ray.get(next(generator))
    except StopIteration:
        return None
    except ray.exceptions.RayError as exc:  # the worker or node died, out of memory, cancelled
        # Ray's first sentence says what happened; the rest is advice on its own tools.
        first = str(exc).split(". ", 1)[0].splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return batch


def _lost(message: str) -> Failure:
    return Failure(ErrorKind.WORKER_LOST, f"worker lost: {message}", True)


def _raise(ended: AttemptEnded) -> None:
    """Raise the attempt's failure as its backend raised it (nothing for a success)."""
    failure = ended.failure
    if failure is None:
        return
    if failure.retryable:
        raise RetryableError(failure.message, kind=failure.kind, retry_after=failure.retry_after)
    raise FatalError(failure.message, kind=failure.kind)


class RemoteBackend:
    """A backend whose attempts run on the cluster; estimates stay the local backend's."""

    def __init__(self, batcher: ShardBatcher, local: Any) -> None:
        self._batcher = batcher
        estimate = getattr(local, "estimate", None)
        if estimate is not None:
            self.estimate = estimate
        self._estimate = estimate
        self.refunds_unused_tokens = getattr(local, "refunds_unused_tokens", True)

    async def stream(self, job: JobSpec, attempt: int, emit: Emit) -> None:
        tokens, _ = attempt_estimate(self._estimate, job)  # estimated as the runner's gate does
        await self._batcher.stream(job, attempt, emit, tokens)
