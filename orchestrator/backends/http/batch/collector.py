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

Spend: ``fits()``, when given, is asked before a chunk is sent (whether the spend cap still has
room for what is spent and reserved, this chunk's requests included); a chunk it refuses is not
sent and its requests end with a fatal ``spend_cap`` error.

A create call in doubt: when it fails after the provider may have made the batch (a timeout, a
dropped connection, a 5xx: :class:`CreateInDoubt`), the provider's batches are searched for the
one this chunk made (:meth:`RemoteBatches.find`, retried until the list can be read) and that
batch is taken as submitted; only when none is found are the requests failed (to be sent again).

A create call cut short by the end of the process: before each create call, ``intend`` is told
the chunk's label, requests and time, and returns once that intent is on disk. A run resumed
from a log with an intent and no batch id for it hands the intent to :meth:`Collector.look_up`:
its batch is searched for as after a create call in doubt, and adopted when found; its requests
wait for the search, and every chunk this collector sends waits for it too (so that a batch
this run makes is not taken for the lost one).

Cancellation: an attempt cancelled while waiting leaves the chunk it was not yet put in; one
already submitted is forgotten (its result, when it comes, is dropped). Cancelling ``run`` cancels
every chunk task: remote batches are left running. :meth:`Collector.stop` cancels them (or says
they are left) first.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import attrs
import trio

from orchestrator.backends.http.batch.provider import (
    CreateInDoubt,
    LostCreate,
    Outcome,
    Progress,
    RemoteBatches,
)
from orchestrator.errors import BackendError, ErrorKind, FatalError, RetryableError

__all__ = ["Chunking", "Collector", "CreateInDoubt", "LostCreate", "Outcome", "Polling", "Progress"]

T = TypeVar("T")


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


@attrs.frozen
class Stopped:
    """What :meth:`Collector.stop` did to one remote batch still running: ``cancelled`` (the
    provider accepted the cancel) or left running; ``note`` says why when a cancel failed."""

    batch_id: str
    cancelled: bool
    note: str = ""


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


Report = Callable[[str, Sequence[str], Mapping[str, int] | None, str], Awaitable[None]]
"""``report(batch_id, custom_ids, counts, note)``: a batch was submitted (counts None; ``note``
says how it was found when its create call was in doubt) or polled."""


async def _silent(
    batch_id: str, custom_ids: Sequence[str], counts: Mapping[str, int] | None, note: str
) -> None:
    return None


Intend = Callable[[str, Sequence[str], float], Awaitable[None]]
"""``intend(label, custom_ids, at)``: a create call is about to go (``at``: wall-clock seconds);
returns once that is recorded for good (see the module docstring)."""


async def _forget(label: str, custom_ids: Sequence[str], at: float) -> None:
    return None


CANCEL_WAIT = 10.0
"""Seconds :meth:`Collector.stop` spends at most on cancelling the remote batches."""


class Collector:
    """See the module docstring. ``report`` is told of each submission and poll."""

    def __init__(
        self,
        remote: RemoteBatches,
        chunking: Chunking,
        polling: Polling,
        report: Report = _silent,
        fits: Callable[[], bool] | None = None,
        intend: Intend = _forget,
    ) -> None:
        self.remote = remote
        self.intend = intend
        self.chunking = chunking
        self.polling = polling
        self.report = report
        self.fits = fits
        self.adopted: dict[str, tuple[_Adopted, str | None]] = {}
        self.waiting: dict[str, _Waiter] = {}
        self.submitted: dict[str, _Waiter] = {}
        self.running: dict[str, list[str]] = {}
        """The remote batches not yet seen ended, with the requests each holds."""
        self.known: set[str] = set()
        """Every remote batch this collector sent or adopted."""
        self._creating: set[trio.Event] = set()
        """One event per create call under way, set when it has ended."""
        self._searching: trio.Event | None = None
        """Set when the search started by :meth:`look_up` has ended (None: none started)."""
        self._arrived = trio.Event()
        self._nursery: trio.Nursery | None = None

    def adopt(self, batch_id: str, requests: Mapping[str, str | None]) -> None:
        """Take over a remote batch an earlier run created (needs :meth:`run` started): it is
        polled to its end, and a request for one of ``requests`` (``custom_id``: the content
        hash of the job it was sent for, None if unknown) gets that batch's result instead of
        being sent again. If the batch cannot be read (gone, refused) or has no result for it,
        the request is sent in a new batch."""
        assert self._nursery is not None, "adopt() before run() started"
        batch = _Adopted()
        for custom_id, content_hash in requests.items():
            self.adopted[custom_id] = (batch, content_hash)
        self.known.add(batch_id)
        self.running[batch_id] = list(requests)
        self._nursery.start_soon(self._collect_adopted, batch_id, batch, list(requests))

    def look_up(self, lost: Sequence[LostCreate], known: Collection[str]) -> None:
        """Take over the create calls an earlier run sent and stopped during (needs :meth:`run`
        started; ``known``: every remote batch the earlier runs named). Each batch is searched
        for, oldest first, as after a create call in doubt; one found is reported as submitted
        and adopted (see :meth:`adopt`). A request for one of ``lost``'s requests waits for the
        search, and is sent in a new batch when its batch is not found (or the search fails
        for good); chunks this collector sends meanwhile wait for the search to end."""
        assert self._nursery is not None, "look_up() before run() started"
        self.known.update(known)
        waiting = []
        for create in lost:
            batch = _Adopted()
            for custom_id, content_hash in create.requests.items():
                self.adopted[custom_id] = (batch, content_hash)
            waiting.append((create, batch))
        self._searching = trio.Event()
        self._nursery.start_soon(self._look_up, waiting, self._searching)

    async def _look_up(self, waiting: list[tuple[LostCreate, _Adopted]], searched: trio.Event) -> None:
        assert self._nursery is not None
        pending = sorted(waiting, key=lambda pair: pair[0].at)
        try:
            while pending:
                create, batch = pending[0]
                try:
                    found = await self._with_retries(
                        partial(self.remote.find, create.label, create.count, create.at, self.known)
                    )
                except FatalError:
                    found = None
                if found is not None:
                    self.known.add(found)
                    custom_ids = list(create.requests)
                    self.running[found] = custom_ids
                    note = "the run stopped during its create call; found the batch it made"
                    await self.report(found, custom_ids, None, note)
                    self._nursery.start_soon(self._collect_adopted, found, batch, custom_ids)
                else:
                    batch.ended.set()  # no outcomes: its requests are sent again
                pending.pop(0)
        finally:
            for _, batch in pending:  # the search was cut short: send them again
                batch.ended.set()
            searched.set()

    def drop_changed(self, custom_id: str, content_hash: str) -> bool:
        """Whether an adopted batch holds ``custom_id`` for a job whose content hash was not
        ``content_hash`` (the job was edited since): then that batch's result is not taken and
        the request goes into a new batch."""
        found = self.adopted.get(custom_id)
        if found is None or found[1] is None or not content_hash or found[1] == content_hash:
            return False
        del self.adopted[custom_id]
        return True

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

    async def stop(self, *, cancel: bool) -> list[Stopped]:
        """The remote batches still running, each cancelled when ``cancel`` (else left running,
        for a resumed run to collect). Cancel calls are retried for at most :data:`CANCEL_WAIT`
        seconds in all; a batch whose cancel failed is left running and says why."""
        running = list(self.running)
        if not cancel:
            return [Stopped(batch_id, cancelled=False) for batch_id in running]
        notes = {batch_id: "the cancel got no answer" for batch_id in running}

        async def cancel_one(batch_id: str) -> None:
            try:
                await self._with_retries(lambda: self.remote.cancel(batch_id))
            except FatalError as exc:
                notes[batch_id] = f"the cancel failed: {exc}"
            else:
                del notes[batch_id]

        with trio.move_on_after(CANCEL_WAIT):
            async with trio.open_nursery() as nursery:
                for batch_id in running:
                    nursery.start_soon(cancel_one, batch_id)
        return [Stopped(batch_id, batch_id not in notes, notes.get(batch_id, "")) for batch_id in running]

    async def request(self, custom_id: str, body: Mapping[str, Any]) -> Outcome:
        """Wait for the result of ``body`` sent as ``custom_id`` (unique among waiting requests),
        or of the adopted batch that already holds ``custom_id``."""
        adopted, _ = self.adopted.pop(custom_id, (None, None))
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
        if self.fits is not None and not self.fits():
            refused = FatalError(
                "not sent: this request's batch would pass the spend cap", kind=ErrorKind.SPEND_CAP
            )
            self._resolve_all(chunk, refused)
            return
        try:
            batch_id, note = await self._submit(chunk)
        except BackendError as exc:
            self._resolve_all(chunk, exc)
            return
        self.running[batch_id] = list(chunk)
        await self.report(batch_id, list(chunk), None, note)
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

    async def _submit(self, chunk: dict[str, _Waiter]) -> tuple[str, str]:
        """The new batch's id (now in :attr:`known`) and, when its create call was in doubt, how
        it was found. The search waits for this collector's other create calls to end, so that
        a batch one of them made is known and not taken for this one."""
        if self._searching is not None:
            await self._searching.wait()
        label = secrets.token_hex(12)
        since = time.time()
        await self.intend(label, list(chunk), since)
        created = trio.Event()
        self._creating.add(created)
        try:
            batch_id = await self.remote.submit([(cid, w.body) for cid, w in chunk.items()], label)
            self.known.add(batch_id)
            return batch_id, ""
        except CreateInDoubt as exc:
            self._creating.discard(created)
            created.set()  # another call in doubt may be waiting for this one
            for other in list(self._creating):
                await other.wait()
            found = await self._with_retries(lambda: self.remote.find(label, len(chunk), since, self.known))
            if found is None:
                raise
            self.known.add(found)
            return found, f"the create call failed ({exc.kind}: {exc}); found the batch it made"
        finally:
            self._creating.discard(created)
            created.set()

    async def _wait_until_ended(self, batch_id: str, custom_ids: list[str]) -> FatalError | None:
        """Poll until the batch ends (None) or a poll fails for good (that error)."""
        try:
            return await self._poll_until_ended(batch_id, custom_ids)
        finally:
            self.running.pop(batch_id, None)

    async def _poll_until_ended(self, batch_id: str, custom_ids: list[str]) -> FatalError | None:
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
            await self.report(batch_id, custom_ids, progress.counts, "")
            if progress.ended:
                return None
            delay = max(
                progress.retry_after or 0.0, min(self.polling.poll_max, delay * self.polling.poll_backoff)
            )

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, repeated after retryable failures (an ended batch's results stay; a list
        or a cancel can be asked again)."""
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
