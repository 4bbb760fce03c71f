"""One Ray actor per backend: where the cluster's attempts ask to start, and hear they must stop.

Rate limits must hold where requests start. An attempt the driver's gate lets through still
waits to be gathered into a shard, for a worker, for the worker's backends to open: a delay of
milliseconds to seconds that differs from shard to shard, so attempts admitted at an even pace
would start in bunches. So every attempt, on whichever node, asks its backend's
:class:`BackendDesk` for a start permit just before it sends its request, and the desk paces
the permits with the runner's own :class:`~orchestrator.run.limits.Gate` (RPM/TPM buckets,
per-model limits, Retry-After pauses, limits learned from the server's headers). The shards tell
the desk what they learn: the server's rate-limit headers, 429s and overloads, the tokens each
attempt really used. The driver keeps its own gate as well, in front: it holds the backend's
``concurrency`` (cluster-wide, since an attempt holds its driver slot until its end arrives),
the adaptive limit and the spend cap, and keeps jobs in the queue during a pause rather than
sending them out to wait.

Permits are asked for in blocks: a shard sends, in one call, every one of its attempts that
waits for a permit, and the desk answers once it has granted the first and every other it can
grant within :data:`BLOCK_SECONDS` after it. Slowly paced permits cost a round trip each; above
a few hundred requests a second (or in a full bucket's burst) one round trip starts several,
and the starts of one block are at most :data:`BLOCK_SECONDS` early.

The desk also carries cancellations: when the driver gives up on one attempt (its timeout, the
idle watchdog, the hard spend cap) it tells the desk, and the shard running the attempt, which
keeps one call waiting on the desk for just that from its first second on (shorter shards never
call), cancels it (its backend ends its process).

The actor is an asyncio actor (Ray's); the gate runs on a trio loop in a thread of its own.
This module does not import Ray: the engine makes the class an actor.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import outcome
import trio

from orchestrator.errors import ErrorKind
from orchestrator.events import LimiterChanged, RateLimitInfo
from orchestrator.run.limits import Gate, Ticket
from orchestrator.spec import BackendLimits

BLOCK_SECONDS = 0.005  # permits granted this soon after a call's first go out with it


async def _unannounced(change: LimiterChanged) -> None:
    """The driver's gate sees the same headers and errors and announces the changes itself."""


class BackendDesk:
    """The desk of one backend (see the module docstring). Every method is a coroutine Ray
    runs on the actor's event loop; the gate's work is handed to the desk's trio thread."""

    def __init__(self, name: str, limits: BackendLimits, refund: bool) -> None:
        self._gate = Gate(name, limits, None, _unannounced, refund=refund)
        self._cancelled: dict[int, set[int]] = {}  # shard → keys of its attempts to cancel
        self._wakeups: dict[int, asyncio.Event] = {}  # shard → its waiting cancellation call
        self._over: set[int] = set()  # shards that ended before their cancellation call came
        started = threading.Event()
        self._thread = threading.Thread(
            target=trio.run, args=(self._serve, started), name="orchestrator-desk", daemon=True
        )
        self._thread.start()
        started.wait()

    async def _serve(self, started: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            started.set()
            await trio.sleep_forever()

    def close(self) -> None:
        """End the desk's trio thread (Ray ends the whole actor instead)."""
        self._token.run_sync_soon(self._nursery.cancel_scope.cancel)
        self._thread.join()

    async def ready(self) -> None:
        """Returns once the actor runs (the driver waits for it before the batch starts)."""

    async def grant(self, wanted: Sequence[tuple[int, str | None, int | None]]) -> list[Ticket]:
        """Permits for the first of ``wanted`` (tokens, model, reply budget) and as many of the next as are
        granted within :data:`BLOCK_SECONDS`, in order: at least one ticket, each to be handed
        back to :meth:`report` when its attempt ends."""
        tickets: list[Ticket] = await self._in_trio(self._grant, wanted)
        return tickets

    async def _grant(self, wanted: Sequence[tuple[int, str | None, int | None]]) -> list[Ticket]:
        tickets = [await self._gate.enter(*wanted[0])]
        with trio.move_on_after(BLOCK_SECONDS):  # a permit cancelled while waiting is not charged
            for tokens, model, output in wanted[1:]:
                tickets.append(await self._gate.enter(tokens, model, output))
        return tickets

    async def report(self, reports: Sequence[Ticket | tuple[str | None, RateLimitInfo]]) -> None:
        """What a shard's attempts did, in order: an ended attempt's ticket (``ticket.used``,
        its tokens, corrects the token pace) or a model's rate-limit headers (lower limits, the
        quota that remains)."""
        await self._in_trio(self._apply, reports)

    async def _apply(self, reports: Sequence[Ticket | tuple[str | None, RateLimitInfo]]) -> None:
        for report in reports:
            if isinstance(report, Ticket):
                self._gate.leave(report)
            else:
                await self._gate.observe(*report)

    async def failed(
        self, ticket: Ticket, kind: ErrorKind, retry_after: float | None, max_pause: float
    ) -> None:
        """A rate-limit or overload error: pause (Retry-After) and pace evenly after a second 429."""
        await self._in_trio(self._gate.failed, ticket, kind, retry_after, max_pause)

    async def cancel(self, shard: int, key: int) -> None:
        """The driver gave up on attempt ``key`` of ``shard``: the shard is to stop it."""
        if shard in self._over:
            return
        self._cancelled.setdefault(shard, set()).add(key)
        wakeup = self._wakeups.get(shard)
        if wakeup is not None:
            wakeup.set()

    async def cancelled(self, shard: int) -> list[int] | None:
        """Wait until the driver cancels attempts of ``shard``: their keys; None once the shard
        is over (:meth:`forget`). A shard keeps one such call waiting while it runs."""
        while not self._cancelled.get(shard):
            if shard in self._over:
                self._over.discard(shard)
                return None
            wakeup = self._wakeups[shard] = asyncio.Event()
            try:
                await wakeup.wait()
            finally:
                self._wakeups.pop(shard, None)
        return sorted(self._cancelled.pop(shard))

    async def forget(self, shard: int) -> None:
        """The shard is over (its worker says so): its waiting call returns, nothing more is
        kept."""
        self._cancelled.pop(shard, None)
        # Kept until its call comes (or for the run, if its worker died before calling).
        self._over.add(shard)
        wakeup = self._wakeups.get(shard)
        if wakeup is not None:
            wakeup.set()

    async def _in_trio(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``function(*args)`` on the desk's trio loop and return (or raise) its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def resolve(result: outcome.Outcome[Any]) -> None:
            if not future.done():
                if isinstance(result, outcome.Error):
                    future.set_exception(result.error)
                else:
                    future.set_result(result.unwrap())

        async def run() -> None:
            result = await outcome.acapture(function, *args)
            loop.call_soon_threadsafe(resolve, result)

        self._token.run_sync_soon(self._nursery.start_soon, run)
        return await future
