"""Gathers batch-API attempts into remote batches, polls them, and hands each attempt its result.

One collector per opened backend. An attempt calls :meth:`Collector.request` with its
``custom_id`` and request body and waits; :meth:`Collector.run` (one task for the backend's life)
takes what is waiting as one chunk when the chunk is full (``max_requests`` or ``max_bytes``) or
the first of it has waited ``linger`` seconds, and starts one task per chunk that submits it,
polls it, and resolves every request in it from the results. Many chunks can be in flight.

Polling: the first poll ``poll_min`` seconds after submission, each next wait ``poll_backoff``
times longer up to ``poll_max``; a Retry-After on a control endpoint is waited in full. A poll that
fails with a retryable error (a connection refused while the server restarts, a 5xx, a 429) is
repeated later; a fatal one ends every request of the chunk with that error. Results missing from
a finished batch end their requests with a retryable ``api_error``.

Cancellation: an attempt cancelled while waiting leaves the chunk it was not yet put in; one
already submitted is forgotten (its result, when it comes, is dropped). Cancelling ``run`` cancels
every chunk task: remote batches are left running, not cancelled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from orchestrator.errors import BackendError, ErrorKind, FatalError, RetryableError


@attrs.frozen
class Outcome:
    """What a batch said about one request: ``reply`` (the complete body) when it succeeded, else
    the ``error`` its attempt raises."""

    custom_id: str
    reply: Any = None
    error: BackendError | None = None


@attrs.frozen
class Progress:
    """One poll's answer: whether the batch has ended, its counts by state (the provider's names),
    and how long the server asks to wait before the next poll."""

    ended: bool
    counts: Mapping[str, int] = attrs.field(factory=dict)
    retry_after: float | None = None


class RemoteBatches(Protocol):
    """One provider's batch endpoints. Every method raises RetryableError or FatalError."""

    def size(self, custom_id: str, body: Mapping[str, Any]) -> int:
        """The bytes this request adds to a batch."""
        ...

    async def submit(self, requests: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
        """Create a batch of ``(custom_id, body)``; its id."""
        ...

    async def poll(self, batch_id: str) -> Progress: ...

    async def results(self, batch_id: str) -> list[Outcome]: ...


@attrs.frozen
class Chunking:
    """How attempts are gathered into batches (within the provider's documented limits)."""

    max_requests: int
    max_bytes: int
    linger: float


@attrs.frozen
class Polling:
    poll_min: float = 2.0
    poll_max: float = 60.0
    poll_backoff: float = 1.5


@attrs.define(eq=False)
class _Adopted:
    """A remote batch a run before this one created: polled until it ends, then its outcomes
    (or the error that ended the polling) wait for the requests that come back for them."""

    ended: trio.Event = attrs.Factory(trio.Event)
    outcomes: dict[str, Outcome] = attrs.Factory(dict)
    error: BackendError | None = None


@attrs.define(eq=False)
class _Waiter:
    body: Mapping[str, Any]
    size: int
    since: float
    done: trio.Event = attrs.Factory(trio.Event)
    outcome: Outcome | None = None


Report = Callable[[str, Sequence[str], Mapping[str, int] | None], Awaitable[None]]
"""``report(batch_id, custom_ids, counts)``: a batch was submitted (counts None) or polled."""


async def _silent(batch_id: str, custom_ids: Sequence[str], counts: Mapping[str, int] | None) -> None:
    return None


class Collector:
    """See the module docstring. ``report`` is told of each submission and poll."""

    def __init__(
        self, remote: RemoteBatches, chunking: Chunking, polling: Polling, report: Report = _silent
    ) -> None:
        self.remote = remote
        self.chunking = chunking
        self.polling = polling
        self.report = report
        self.adopted: dict[str, _Adopted] = {}
        self.waiting: dict[str, _Waiter] = {}
        self.submitted: dict[str, _Waiter] = {}
        self._arrived = trio.Event()
        self._nursery: trio.Nursery | None = None

    def adopt(self, batch_id: str, custom_ids: Sequence[str]) -> None:
        """Take over a remote batch an earlier run created (needs :meth:`run` started): it is
        polled to its end, and a request for one of ``custom_ids`` gets that batch's result
        instead of being sent again. If the batch cannot be read (gone, refused) or has no result
        for it, the request is sent in a new batch."""
        assert self._nursery is not None, "adopt() before run() started"
        batch = _Adopted()
        for custom_id in custom_ids:
            self.adopted[custom_id] = batch
        self._nursery.start_soon(self._collect_adopted, batch_id, batch, list(custom_ids))

    async def _collect_adopted(self, batch_id: str, batch: _Adopted, custom_ids: list[str]) -> None:
        try:
            batch.error = await self._wait_until_ended(batch_id, custom_ids)
            if batch.error is None:
                outcomes = await self._with_retries(lambda: self.remote.results(batch_id))
                batch.outcomes = {outcome.custom_id: outcome for outcome in outcomes}
        except FatalError as exc:
            batch.error = exc
        finally:
            batch.ended.set()

    async def request(self, custom_id: str, body: Mapping[str, Any]) -> Outcome:
        """Wait for the result of ``body`` sent as ``custom_id`` (unique among waiting requests),
        or of the adopted batch that already holds ``custom_id``."""
        adopted = self.adopted.pop(custom_id, None)
        if adopted is not None:
            await adopted.ended.wait()
            found = adopted.outcomes.pop(custom_id, None)
            if found is not None:
                return found
        waiter = _Waiter(body, self.remote.size(custom_id, body), trio.current_time())
        self.waiting[custom_id] = waiter
        self._arrived.set()
        try:
            await waiter.done.wait()
        finally:
            if self.waiting.get(custom_id) is waiter:
                del self.waiting[custom_id]
            if self.submitted.get(custom_id) is waiter:
                del self.submitted[custom_id]
        assert waiter.outcome is not None
        return waiter.outcome

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Gather and submit chunks until cancelled (see the module docstring)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                while not self.waiting:
                    self._arrived = trio.Event()
                    await self._arrived.wait()
                first = next(iter(self.waiting.values()))
                with trio.move_on_at(first.since + self.chunking.linger):
                    while len(self.waiting) < self.chunking.max_requests:
                        self._arrived = trio.Event()
                        await self._arrived.wait()
                chunk = self._take()
                if chunk:  # empty when every waiting attempt was cancelled while lingering
                    nursery.start_soon(self._run_chunk, chunk)

    def _take(self) -> dict[str, _Waiter]:
        """The oldest waiting requests that fit one batch (always at least one)."""
        chunk: dict[str, _Waiter] = {}
        size = 0
        for custom_id, waiter in self.waiting.items():
            if chunk and (
                len(chunk) >= self.chunking.max_requests or size + waiter.size > self.chunking.max_bytes
            ):
                break
            chunk[custom_id] = waiter
            size += waiter.size
        for custom_id, waiter in chunk.items():
            del self.waiting[custom_id]
            self.submitted[custom_id] = waiter
        return chunk

    async def _run_chunk(self, chunk: dict[str, _Waiter]) -> None:
        try:
            batch_id = await self.remote.submit([(cid, w.body) for cid, w in chunk.items()])
        except BackendError as exc:
            self._resolve_all(chunk, exc)
            return
        await self.report(batch_id, list(chunk), None)
        failure = await self._wait_until_ended(batch_id, list(chunk))
        if failure is not None:
            self._resolve_all(chunk, failure)
            return
        try:
            outcomes = await self._with_retries(lambda: self.remote.results(batch_id))
        except FatalError as exc:
            self._resolve_all(chunk, exc)
            return
        for outcome in outcomes:
            waiter = chunk.pop(outcome.custom_id, None)
            if waiter is not None:
                self._resolve(waiter, outcome)
        missing = RetryableError(
            f"batch {batch_id} ended without a result for this request", kind=ErrorKind.API_ERROR
        )
        self._resolve_all(chunk, missing)

    async def _wait_until_ended(self, batch_id: str, custom_ids: list[str]) -> FatalError | None:
        delay = self.polling.poll_min
        while True:
            await trio.sleep(delay)
            try:
                progress = await self.remote.poll(batch_id)
            except RetryableError as exc:
                delay = max(
                    exc.retry_after or 0.0, min(self.polling.poll_max, delay * self.polling.poll_backoff)
                )
                continue
            except FatalError as exc:
                return exc
            await self.report(batch_id, custom_ids, progress.counts)
            if progress.ended:
                return None
            delay = max(
                progress.retry_after or 0.0, min(self.polling.poll_max, delay * self.polling.poll_backoff)
            )

    async def _with_retries(self, call: Callable[[], Awaitable[list[Outcome]]]) -> list[Outcome]:
        """``call()``, repeated after retryable failures (the results of an ended batch stay)."""
        delay = self.polling.poll_min
        while True:
            try:
                return await call()
            except RetryableError as exc:
                await trio.sleep(max(exc.retry_after or 0.0, delay))
                delay = min(self.polling.poll_max, delay * self.polling.poll_backoff)

    def _resolve(self, waiter: _Waiter, outcome: Outcome) -> None:
        waiter.outcome = outcome
        waiter.done.set()

    def _resolve_all(self, chunk: Mapping[str, _Waiter], error: BackendError) -> None:
        for custom_id, waiter in chunk.items():
            self._resolve(waiter, Outcome(custom_id, error=error))
