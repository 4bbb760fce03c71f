"""The worker side of the Ray engine: run one micro-shard of attempts and stream their events.

A shard is a few attempts (8 to 32) the driver has already let through its gates. The worker runs
each attempt exactly once, on its own trio loop in a thread, and yields :data:`Message` lists
(every ~50 ms or ~500 messages, whichever comes first) from a plain generator, which Ray runs
as a streaming generator task. The worker decides nothing: no retries, no limits, no log. A
job's last message is its attempt's end (None: the stream returned; a :class:`Failure`: it
raised); the driver tags, counts and judges everything.

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
from orchestrator.events import StreamEvent
from orchestrator.run.job import Failure, failure_from, internal_failure
from orchestrator.spec import JobSpec

BATCH_SECONDS = 0.05  # a batch is sent at most this long after its first message...
BATCH_MESSAGES = 500  # ...or once it holds this many
_STOP_GRACE = 5.0  # seconds the attempts get to clean up when the shard is cancelled
_ATTEMPT_GRACE = 5.0  # past its attempt timeout the driver has given up: the worker does too
_log = logger("orchestrator.engines.ray.shard")


@attrs.frozen
class ShardAttempt:
    """One attempt to run: ``key`` names it in the messages (the driver's own number)."""

    key: int
    job: JobSpec
    attempt: int


@attrs.frozen
class AttemptEnded:
    """The attempt's stream returned (``failure`` None) or raised ``failure``."""

    failure: Failure | None


Message = tuple[int, StreamEvent | AttemptEnded]
_DONE = object()


def run_shard(
    settings: Mapping[str, Any], seed: int, attempts: Sequence[ShardAttempt]
) -> Iterator[list[Message]]:
    """Run every attempt once and yield its messages in batches; see the module docstring.

    ``settings`` maps each backend the attempts name to its batch settings. Closing the
    generator early (Ray cancels the task) cancels the attempts still running and waits up to
    ``_STOP_GRACE`` seconds for them to clean up (end their processes) before returning.
    """
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ready = threading.Event()
    handle: dict[str, Any] = {}

    def in_thread() -> None:
        try:
            trio.run(_run_all, settings, seed, attempts, out, ready, handle)
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
) -> None:
    with trio.CancelScope() as scope:
        handle["token"], handle["scope"] = trio.lowlevel.current_trio_token(), scope
        ready.set()
        async with trio.open_nursery() as nursery:
            backends = {}
            for name, value in settings.items():
                backends[name] = await nursery.start(_open_backend, name, value, seed)
            async with trio.open_nursery() as runs:
                for attempt in attempts:
                    runs.start_soon(_run_one, backends[attempt.job.backend], attempt, out)
            nursery.cancel_scope.cancel()  # close the backends


async def _open_backend(
    name: str, settings: Any, seed: int, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Open backend ``name`` and hold it open until cancelled."""
    async with backend_kind(name).open(settings, seed=seed) as backend:
        task_status.started(backend)
        await trio.sleep_forever()


async def _run_one(backend: Any, attempt: ShardAttempt, out: queue.SimpleQueue[Any]) -> None:
    """Stream one attempt into ``out`` and end it with its :class:`AttemptEnded`."""
    key = attempt.key

    async def emit(event: StreamEvent) -> None:
        out.put((key, event))

    limit = attempt.job.timeouts.attempt
    failure: Failure | None = None
    with trio.move_on_after(float("inf") if limit is None else limit + _ATTEMPT_GRACE):
        try:
            await backend.stream(attempt.job, attempt.attempt, emit)
        except Exception as exc:
            failure = failure_from(exc)
            if failure is None:
                _log.warning("backend raised an unexpected exception", exc_info=exc)
                failure = internal_failure(exc)
    out.put((key, AttemptEnded(failure)))
