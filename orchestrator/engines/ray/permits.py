"""A shard's side of its backends' desks (:mod:`.desk`): start permits, what it learned, stops.

Runs on the shard's trio loop, in a Ray worker; a call to the desk wakes the loop when its
answer comes, so the loop never blocks on Ray. Of a shard's attempts that
wait for a permit at one time, one call asks for all of them; at most one such call per backend
is in flight, and what it did not grant is asked for next, first in line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import trio

from orchestrator.errors import ErrorKind, RetryableError
from orchestrator.events import RateLimitInfo, Tokens
from orchestrator.run.job import Failure
from orchestrator.run.limits import BACKPRESSURE_KINDS, Ticket
from orchestrator.run.pacer import Cost

# What a shard tells its desk: an attempt's ended ticket, or the rate-limit headers of a model.
Report = Ticket | tuple[str | None, RateLimitInfo]

_MOST_PER_CALL = 64  # permits one call asks for
REPORT_SECONDS = 0.05  # what attempts used and learned goes to the desk in one call this often
# A shard starts listening for cancellations this long after it starts: most shards of short
# attempts are over by then and cost the desk nothing; a cancellation waits for it until then.
WATCH_AFTER_SECONDS = 1.0


@attrs.define(eq=False)
class _Waiter:
    tokens: int
    model: str | None
    output: int | None  # the reply budget (max_tokens): what the output-token bucket is charged
    granted: trio.Event = attrs.Factory(trio.Event)
    ticket: Ticket | None = None
    error: str | None = None
    gone: bool = False  # cancelled after its request was sent: a late permit is handed back


async def _answer(ref: Any) -> Any:
    """The result of one Ray call (raised if it failed). Waited for through a callback, not
    ``ray.get``: a task blocked in ``ray.get`` has Ray re-lease its resources each time."""
    future = ref.future()
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:  # the shard is over: nobody waits
            pass

    future.add_done_callback(wake)
    await done.wait()
    return future.result()


class Permits:
    """One backend's desk, as one shard sees it. Its tasks run in ``nursery`` (the shard's)."""

    def __init__(self, desk: Any, nursery: trio.Nursery, *, asking: bool) -> None:
        """``asking``: whether the backend is paced (its attempts ask for permits); it becomes
        so when the shard sees its server announce limits or refuse a request for load."""
        self._desk = desk
        self.asking = asking
        self._nursery = nursery
        self._waiting: list[_Waiter] = []
        self._asking = False
        self._reports: list[Report] = []
        self._reporting = False
        self._watching = False

    async def enter(self, tokens: int, model: str | None, output: int | None = None) -> Ticket | None:
        """Wait for a permit to start a request of ``tokens``, ``output`` of them its reply
        budget (None at once if the backend is not paced); raises a retryable ``worker_lost`` if
        the desk cannot be reached. Cancelled, it holds nothing."""
        if not self.asking:
            return None
        waiter = _Waiter(tokens, model, output)
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
                        self._desk.grant.remote([(w.tokens, w.model, w.output) for w in asked])
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
            ticket.used = Tokens()
        self._report(ticket)

    def ended(
        self, ticket: Ticket | None, model: str | None, failure: Failure | None, max_pause: float
    ) -> None:
        """Tell the desk how the attempt ended: a rate-limit or overload error pauses the
        backend for the whole cluster at once (and paces its attempts from then on)."""
        if failure is not None and failure.kind in BACKPRESSURE_KINDS:
            self.asking = True
            self._desk.failed.remote(ticket or _unpaced(model), failure.kind, failure.retry_after, max_pause)
        if ticket is not None:
            self.leave(ticket)

    def observe(self, model: str | None, info: RateLimitInfo) -> None:
        """The server's rate-limit headers, for the desk to learn from (and the backend's
        attempts ask for permits from then on)."""
        self.asking = True
        self._report((model, info))

    def _report(self, report: Report) -> None:
        """Send ``report`` with the others of the next :data:`REPORT_SECONDS` (a call for each
        would queue the next shard's permits behind them)."""
        self._reports.append(report)
        if not self._reporting:
            self._reporting = True
            self._nursery.start_soon(self._send_reports)

    async def _send_reports(self) -> None:
        try:
            while self._reports:
                await trio.sleep(REPORT_SECONDS)
                self.flush()
        finally:
            self._reporting = False

    def flush(self) -> None:
        """Send what is waiting to be reported now."""
        if self._reports:
            reports, self._reports = self._reports, []
            self._desk.report.remote(reports)

    def close(self, shard: int) -> None:
        """The shard is ending: send what is left to report, and end its cancellation watch."""
        self.flush()
        if self._watching:
            self._watching = False
            self._desk.forget.remote(shard)  # after the watch's call: Ray keeps one caller's order

    async def watch_cancellations(self, shard: int, cancel: Callable[[int], None]) -> None:
        """From :data:`WATCH_AFTER_SECONDS` on, until the shard ends (or the desk is gone):
        ``cancel(key)`` each attempt the driver gives up on. The shard must :meth:`close`."""
        await trio.sleep(WATCH_AFTER_SECONDS)
        self._watching = True
        while True:
            try:
                keys: list[int] | None = await _answer(self._desk.cancelled.remote(shard))
            except Exception:
                return  # no desk, no cancellations; the attempts' own timeouts still hold
            if keys is None:
                return
            for key in keys:
                cancel(key)


def _unpaced(model: str | None) -> Ticket:
    """A stand-in ticket for an attempt that started without a permit (its backend was not
    paced yet): charged nothing, and sent before any 429 the desk has seen."""
    return Ticket(Cost(), 0, model, -math.inf, (0, None))
