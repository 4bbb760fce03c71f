"""A shard's side of its backends' desks (:mod:`.desk`): start permits, what it learned, stops.

Runs on the shard's trio loop, in a Ray worker. Each call to the desk waits for its answer in a
worker thread (``ray.get``), so the shard's loop never blocks on Ray. Of a shard's attempts that
wait for a permit at one time, one call asks for all of them; at most one such call per backend
is in flight, and what it did not grant is asked for next, first in line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from orchestrator.errors import ErrorKind, RetryableError
from orchestrator.events import RateLimitInfo
from orchestrator.run.job import Failure
from orchestrator.run.limits import BACKPRESSURE_KINDS, Ticket

_MOST_PER_CALL = 64  # permits one call asks for


@attrs.define(eq=False)
class _Waiter:
    tokens: int
    model: str | None
    granted: trio.Event = attrs.Factory(trio.Event)
    ticket: Ticket | None = None
    error: str | None = None
    gone: bool = False  # cancelled after its request was sent: a late permit is handed back


async def _answer(ref: Any) -> Any:
    """The result of one Ray call, waited for in a worker thread (abandoned if cancelled)."""
    import ray

    return await trio.to_thread.run_sync(ray.get, ref, abandon_on_cancel=True)


class Permits:
    """One backend's desk, as one shard sees it. Its tasks run in ``nursery`` (the shard's)."""

    def __init__(self, desk: Any, nursery: trio.Nursery) -> None:
        self._desk = desk
        self._nursery = nursery
        self._waiting: list[_Waiter] = []
        self._asking = False

    async def enter(self, tokens: int, model: str | None) -> Ticket:
        """Wait for a permit to start a request of ``tokens``; raises a retryable
        ``worker_lost`` if the desk cannot be reached. Cancelled, it holds nothing."""
        waiter = _Waiter(tokens, model)
        self._waiting.append(waiter)
        if not self._asking:
            self._asking = True
            self._nursery.start_soon(self._ask)
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter.ticket is not None:  # granted just as it was cancelled
                self.leave(waiter.ticket)
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            else:
                waiter.gone = True
            raise
        if waiter.ticket is None:
            raise RetryableError(f"the backend's desk is gone: {waiter.error}", kind=ErrorKind.WORKER_LOST)
        return waiter.ticket

    async def _ask(self) -> None:
        try:
            while self._waiting:
                asked = self._waiting[:_MOST_PER_CALL]
                del self._waiting[: len(asked)]
                try:
                    tickets: list[Ticket] = await _answer(
                        self._desk.grant.remote([(w.tokens, w.model) for w in asked])
                    )
                except Exception as exc:  # the desk died: every waiting attempt is lost
                    for waiter in [*asked, *self._waiting]:
                        waiter.error = type(exc).__name__
                        waiter.granted.set()
                    self._waiting.clear()
                    return
                for waiter, ticket in zip(asked, tickets, strict=False):
                    if waiter.gone:
                        self.leave(ticket)  # no request was sent: nothing used
                    waiter.ticket = ticket
                    waiter.granted.set()
                self._waiting[:0] = [w for w in asked[len(tickets) :] if not w.gone]
        finally:
            self._asking = False

    def leave(self, ticket: Ticket) -> None:
        """The attempt ended (``ticket.used`` set to its tokens, when known)."""
        if ticket.used is None:
            ticket.used = 0
        self._desk.leave.remote(ticket)

    def ended(self, ticket: Ticket, failure: Failure | None, max_pause: float) -> None:
        """Tell the desk how the attempt ended: a rate-limit or overload error pauses the
        backend for the whole cluster."""
        if failure is not None and failure.kind in BACKPRESSURE_KINDS:
            self._desk.failed.remote(ticket, failure.kind, failure.retry_after, max_pause)
        self._desk.leave.remote(ticket)

    def observe(self, model: str | None, info: RateLimitInfo) -> None:
        """The server's rate-limit headers, for the desk to learn from."""
        self._desk.observe.remote(model, info)

    async def watch_cancellations(self, shard: int, cancel: Callable[[int], None]) -> None:
        """Until the shard ends (or the desk is gone): ``cancel(key)`` each attempt the driver
        gives up on."""
        while True:
            try:
                keys: list[int] | None = await _answer(self._desk.cancelled.remote(shard))
            except Exception:
                return  # no desk, no cancellations; the attempts' own timeouts still hold
            if keys is None:
                return
            for key in keys:
                cancel(key)
