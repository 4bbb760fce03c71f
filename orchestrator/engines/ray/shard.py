"""The worker side of the Ray engine: run one micro-shard of attempts and stream their events.

A shard is a few attempts (8 to 32) the driver has already let through its gates. The worker runs
each attempt exactly once, on its own trio loop in a thread, and yields :data:`Message` lists
(every ~50 ms or ~500 messages, whichever comes first) from a plain generator, which Ray runs
as a streaming generator task. A job's last message is its attempt's end (None: the stream
returned; a :class:`Failure`: it raised); the driver tags, counts and judges everything: the
worker decides no retry and writes no log.

With its backends' desks (:mod:`.desk`), each attempt waits for a start permit just before it
streams, so rate limits hold where requests start; the shard tells the desk what the attempt
learned and used, and cancels an attempt the driver has given up on (its timeout, the idle
watchdog), whose backend then ends its process.

This module does not import Ray: the driver ships :func:`run_shard` to workers as a remote
function (:mod:`orchestrator.engines.ray.driver`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import trio

from orchestrator.backends import backend_kind
from orchestrator.diagnostics import logger
from orchestrator.engines.ray.permits import Permits
from orchestrator.errors import ErrorKind
from orchestrator.events import RateLimitInfo, StreamEvent
from orchestrator.run.job import Failure, JobState, failure_from, internal_failure
from orchestrator.run.limits import Ticket
from orchestrator.spec import JobSpec

BATCH_SECONDS = 0.05  # a batch is sent at most this long after its first message...
BATCH_MESSAGES = 500  # ...or once it holds this many
_STOP_GRACE = 5.0  # seconds the attempts get to clean up when the shard is cancelled
_ATTEMPT_GRACE = 5.0  # past its attempt timeout the driver has given up: the worker does too
_log = logger("orchestrator.engines.ray.shard")


@attrs.frozen
class ShardAttempt:
    """One attempt to run: ``key`` names it in the messages (the driver's own number);
    ``tokens`` is what its start permit reserves."""

    key: int
    job: JobSpec
    attempt: int
    tokens: int = 0


@attrs.frozen
class AttemptEnded:
    """The attempt's stream returned (``failure`` None) or raised ``failure``."""

    failure: Failure | None


Message = tuple[int, StreamEvent | AttemptEnded]
_DONE = object()


def run_shard(
    settings: Mapping[str, Any],
    seed: int,
    attempts: Sequence[ShardAttempt],
    desks: Mapping[str, Any] | None = None,
    shard: int = 0,
    paced: frozenset[str] = frozenset(),
) -> Iterator[list[Message]]:
    """Run every attempt once and yield its messages in batches; see the module docstring.

    ``settings`` maps each backend the attempts name to its batch settings; ``desks`` maps it
    to its desk (an actor handle; None: start at once, and no cancellation of one attempt),
    where this shard is known as ``shard``; the attempts of the ``paced`` backends ask their
    desk for start permits (the others too, once their server announced limits). Closing the
    generator early (Ray cancels the task) cancels the attempts still running and waits up to
    ``_STOP_GRACE`` seconds for them to clean up (end their processes) before returning.
    """
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ready = threading.Event()
    handle: dict[str, Any] = {}

    def in_thread() -> None:
        try:
            trio.run(_run_all, settings, seed, attempts, out, ready, handle, desks or {}, shard, paced)
        except BaseException as exc:  # reported to the generator, which raises it in Ray's task
            out.put(exc)
        finally:
            ready.set()
            out.put(_DONE)

    thread = threading.Thread(target=in_thread, name="orchestrator-shard", daemon=True)
    thread.start()
    try:
        while (batch := _next_batch(out)) is not None:
            yield batch
    finally:
        ready.wait()
        token, scope = handle.get("token"), handle.get("scope")
        if thread.is_alive() and token is not None and scope is not None:
            try:
                trio.from_thread.run_sync(scope.cancel, trio_token=token)
            except trio.RunFinishedError:
                pass
        thread.join(_STOP_GRACE)


def _next_batch(out: queue.SimpleQueue[Any]) -> list[Message] | None:
    """The next batch of messages: waits for the first, then takes more for up to
    ``BATCH_SECONDS``; None once the shard is done (an error of the shard itself is raised)."""
    first = out.get()
    if first is _DONE:
        return None
    if isinstance(first, BaseException):
        raise first
    batch: list[Message] = [first]
    until = time.monotonic() + BATCH_SECONDS
    while len(batch) < BATCH_MESSAGES:
        left = until - time.monotonic()
        try:
            item = out.get(timeout=left) if left > 0 else out.get_nowait()
        except queue.Empty:
            break
        if item is _DONE or isinstance(item, BaseException):
            out.put(item)  # seen by the next call, after this batch is sent
            break
        batch.append(item)
    return batch


async def _run_all(
    settings: Mapping[str, Any],
    seed: int,
    attempts: Sequence[ShardAttempt],
    out: queue.SimpleQueue[Any],
    ready: threading.Event,
    handle: dict[str, Any],
    desks: Mapping[str, Any],
    shard: int,
    paced: frozenset[str],
) -> None:
    with trio.CancelScope() as scope:
        handle["token"], handle["scope"] = trio.lowlevel.current_trio_token(), scope
        ready.set()
        scopes: dict[int, trio.CancelScope] = {}

        def cancel(key: int) -> None:
            attempt_scope = scopes.get(key)
            if attempt_scope is not None:
                attempt_scope.cancel()

        permits: dict[str, Permits] = {}
        try:
            async with trio.open_nursery() as nursery:
                for name, desk in desks.items():
                    if name in settings:
                        permits[name] = Permits(desk, nursery, asking=name in paced)
                        nursery.start_soon(permits[name].watch_cancellations, shard, cancel)
                backends = {}
                for name, value in settings.items():
                    backends[name] = await nursery.start(_open_backend, name, value, seed)
                async with trio.open_nursery() as runs:
                    for attempt in attempts:
                        own = scopes[attempt.key] = trio.CancelScope()
                        name = attempt.job.backend
                        runs.start_soon(_run_one, backends[name], attempt, out, permits.get(name), own)
                nursery.cancel_scope.cancel()  # close the backends, stop watching for cancellations
        finally:
            for line in permits.values():
                line.close(shard)


async def _open_backend(
    name: str, settings: Any, seed: int, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Open backend ``name`` and hold it open until cancelled."""
    async with backend_kind(name).open(settings, seed=seed) as backend:
        task_status.started(backend)
        await trio.sleep_forever()


async def _run_one(
    backend: Any,
    attempt: ShardAttempt,
    out: queue.SimpleQueue[Any],
    permits: Permits | None,
    scope: trio.CancelScope,
) -> None:
    """Stream one attempt into ``out`` (once its permit is granted) and end it with its
    :class:`AttemptEnded`. ``scope`` is the attempt's own: cancelled, the attempt stops."""
    key, job = attempt.key, attempt.job
    state = JobState(spec=job)  # what the attempt used, by the runner's own rule
    state.begin_attempt(0.0)

    async def emit(event: StreamEvent) -> None:
        out.put((key, event))
        state.observe(event)
        if permits is not None and type(event) is RateLimitInfo:
            permits.observe(job.model, event)

    limit = job.timeouts.attempt
    failure: Failure | None = None
    ticket: Ticket | None = None
    with scope, trio.move_on_after(float("inf") if limit is None else limit + _ATTEMPT_GRACE):
        try:
            if permits is not None:
                ticket = await permits.enter(attempt.tokens, job.model, job.max_tokens)  # None: not paced
            await backend.stream(job, attempt.attempt, emit)
        except Exception as exc:
            failure = failure_from(exc)
            if failure is None:
                _log.warning("backend raised an unexpected exception", exc_info=exc)
                failure = internal_failure(exc)
    if scope.cancelled_caught:  # the driver has given up on it and will not read this
        failure = Failure(ErrorKind.WORKER_LOST, "cancelled by the driver", True)
    if permits is not None:
        if ticket is not None:
            ticket.used = state.attempt_spent().tokens
        permits.ended(ticket, job.model, failure, job.retry.max_retry_after)
    out.put((key, AttemptEnded(failure)))
