"""Where a batch's trio run lives, and how Ctrl-C stops it.

A batch always runs on trio. The run is hosted in one of three ways:

- :func:`run_blocking` (``run_batch``): its own ``trio.run`` in a program with no event loop;
- inside the caller's trio program (``open_batch`` under trio): nothing to host;
- :class:`Guest` (``run_batch_async``, ``open_batch`` under asyncio, a Jupyter cell): a trio
  *guest run* on the running asyncio loop (``trio.lowlevel.start_guest_run``), on the same
  thread, so neither loop blocks the other.

Ctrl-C in ``run_batch`` and ``run_batch_async`` (main thread only): for the duration of the call
a SIGINT handler replaces the host's, and the previous one is back when the call returns. The
first SIGINT stops the batch as the CLI does (no new attempts, in-flight ones cancelled, every
job's terminal event and the summary logged); a second one tears the run down at once. Either way
the call then raises a plain :class:`KeyboardInterrupt`. Inside ``async with open_batch(...)`` on
asyncio the host's own handling stays (``asyncio.run`` cancels the task): the cancellation stops
the batch gracefully and waits for it before it propagates.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import outcome
import sniffio
import trio

from orchestrator.events import Tagged
from orchestrator.record.claim import LogClaim
from orchestrator.run.batch import BatchResult, execute, preflight
from orchestrator.run.control import RunControl
from orchestrator.spec import BatchSpec

T = TypeVar("T")


class Interrupts:
    """The signals a run received: the first is a graceful stop, a later one a teardown."""

    def __init__(self) -> None:
        self.first: int | None = None


async def watch_signals(
    control: RunControl,
    everything: trio.CancelScope,
    interrupts: Interrupts,
    signums: Collection[int] = (signal.SIGINT,),
    announce: Callable[[str], object] | None = None,
    before_stop: Callable[[int, AsyncIterator[int]], Awaitable[object]] | None = None,
) -> None:
    """First signal: stop the batch gracefully through ``control``; second: cancel ``everything``.

    ``before_stop(signum, signals)``, when given, is awaited between the first signal and the
    stop (to ask how to stop, say); a signal it takes from ``signals`` does not count as the
    second. Runs until cancelled; the signal handlers it installed are removed (the previous
    ones restored) when it ends. Only in the main thread (signal handlers live there).
    """
    with trio.open_signal_receiver(*signums) as receiver:
        async for signum in receiver:
            if interrupts.first is None:
                interrupts.first = signum
                if before_stop is not None:
                    await before_stop(signum, receiver)
                control.cancel("interrupted" if signum == signal.SIGINT else "terminated")
                if announce is not None:
                    announce("stopping: cancelling running jobs and flushing the log (again to exit at once)")
            else:
                everything.cancel()
                return


async def alongside(
    main: Callable[[], Awaitable[T]], *helpers: Callable[[trio.CancelScope], Awaitable[object]]
) -> T | None:
    """``await main()`` with helper tasks beside it, cancelled once it returns.

    Each helper gets the scope of the whole; a helper that cancels it tears ``main`` down, and
    then the result is None. What ``main`` raises comes out as it is, not in an exception group.
    """
    result: T | None = None
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        for helper in helpers:
            nursery.start_soon(helper, nursery.cancel_scope)
        try:
            result = await main()
        except Exception as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


async def _supervised(
    main: Callable[[RunControl], Awaitable[T]], control: RunControl, interrupts: Interrupts
) -> T | None:
    """``main(control)`` with Ctrl-C watched (main thread only, and not when the process ignores
    SIGINT, as a background job does); None when a second Ctrl-C tore it down."""

    async def watch(everything: trio.CancelScope) -> None:
        await watch_signals(control, everything, interrupts)

    watched = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    )
    return await alongside(lambda: main(control), *([watch] if watched else []))


def running_loop_library() -> str | None:
    """The async library whose loop runs in this thread ("asyncio", "trio", ...), or None."""
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        pass
    try:  # synchronous code called from a running loop (a Jupyter cell) has no current task
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return "asyncio"


def refuse_running_loop(what: str) -> None:
    """Raise :class:`RuntimeError`, saying what to call instead, when an event loop already runs
    in this thread (a blocking call there would stop it)."""
    library = running_loop_library()
    if library is not None:
        raise RuntimeError(
            f"{what}() cannot run inside a running {library} event loop (in Jupyter, every cell runs "
            "in one): use `await run_batch_async(...)` or `async with open_batch(...)` instead"
        )


def run_blocking(main: Callable[[RunControl], Awaitable[T]], *, what: str = "run_batch") -> T:
    """Run ``main(control)`` in a new trio run and return its result.

    Raises :class:`RuntimeError` (saying what to call instead) when an event loop already runs
    in this thread, and a plain :class:`KeyboardInterrupt` after a Ctrl-C (see module docstring).
    """
    refuse_running_loop(what)
    interrupts = Interrupts()
    result = trio.run(_supervised, main, RunControl(), interrupts)
    if interrupts.first is not None or result is None:
        raise KeyboardInterrupt
    return result


class Guest:
    """A trio run hosted on the running asyncio loop, in this thread.

    :meth:`cancel` may be called from asyncio code at any time: it reaches the trio run through
    its token (trio objects are never touched from outside their run).
    """

    def __init__(self) -> None:
        self.control = RunControl()
        self.interrupts = Interrupts()
        self._token: trio.lowlevel.TrioToken | None = None
        self._everything: trio.CancelScope | None = None

    def call_soon(self, fn: Callable[[], object]) -> bool:
        """Run ``fn`` inside the trio run soon; False if the run has not started or has ended."""
        if self._token is None:
            return False
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:
            return False
        return True

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the batch gracefully (see :class:`~orchestrator.run.control.RunControl`)."""
        if not self.call_soon(lambda: self.control.cancel(reason)):
            self.control.cancel(reason)  # not started yet: it stops as soon as it starts

    def tear_down(self) -> None:
        """Cancel everything now: backends clean up, unfinished jobs get no terminal event."""
        everything = self._everything
        if everything is not None:
            self.call_soon(everything.cancel)

    async def run(self, main: Callable[[RunControl], Awaitable[T]], *, watch_sigint: bool = True) -> T:
        """Run ``main(control)`` as a trio guest and return its result.

        If the awaiting asyncio task is cancelled, the batch is stopped gracefully and awaited
        before the cancellation goes on (a second cancellation tears it down). After a Ctrl-C
        (``watch_sigint``) the batch ends gracefully and this raises :class:`KeyboardInterrupt`.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[T | None]] = loop.create_future()

        async def guest() -> T | None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as everything:
                self._everything = everything
                if watch_sigint:
                    return await _supervised(main, self.control, self.interrupts)
                return await main(self.control)
            return None

        trio.lowlevel.start_guest_run(
            guest,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
            strict_exception_groups=True,
        )
        cancelled = 0
        while True:
            try:
                ended = await asyncio.shield(done)
                break
            except asyncio.CancelledError:
                cancelled += 1
                if cancelled == 1:
                    self.cancel("cancelled")
                else:
                    self.tear_down()
        result = ended.unwrap()
        if cancelled:
            raise asyncio.CancelledError
        if self.interrupts.first is not None or result is None:
            raise KeyboardInterrupt
        return result


_END = object()  # after the last event


class GuestBatch:
    """A batch running on a trio guest inside ``async with open_batch(...)`` under asyncio:
    iterate it for tagged events as they happen (the same as :class:`~orchestrator.run.batch.BatchRun`).

    Events wait in an asyncio queue of ``buffer`` events; a reader that falls behind slows the
    batch (the bus waits for room), nothing is dropped until the reader stops listening.
    """

    def __init__(self, guest: Guest, buffer: int) -> None:
        self.result: BatchResult | None = None
        self._guest = guest
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=buffer)
        self._closed = False
        self._room: trio.Event | None = None  # set while the trio side waits for room
        self._running: asyncio.Future[BatchResult] | None = None

    @property
    def control(self) -> RunControl:
        return self._guest.control

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the batch gracefully (see :class:`~orchestrator.run.control.RunControl`)."""
        self._guest.cancel(reason)

    def __aiter__(self) -> GuestBatch:
        return self

    async def __anext__(self) -> Tagged:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        self._wake()
        if item is _END:
            self._closed = True
            raise StopAsyncIteration
        assert isinstance(item, Tagged)
        return item

    async def wait(self) -> BatchResult:
        """Stop listening to events and wait for the batch to finish."""
        self.close()
        assert self._running is not None
        self.result = await self._running
        return self.result

    def close(self) -> None:
        """Stop listening: events from now on are not queued (they still reach the log)."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        room = self._room
        if room is not None:
            self._guest.call_soon(room.set)

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        """Bus side (in the trio run): queue each event, waiting for room."""
        for tagged in batch:
            await self._put(tagged)

    async def _put(self, item: object) -> None:
        while not self._closed and self._queue.full():
            self._room = trio.Event()
            if self._queue.full() and not self._closed:
                await self._room.wait()
            self._room = None
        if not self._closed:
            self._queue.put_nowait(item)

    async def execute(
        self, spec: BatchSpec, keep_text: bool, control: RunControl, claim: LogClaim | None = None
    ) -> BatchResult:
        """Trio side: run the batch, its events to this queue, then mark the end."""
        result = await execute(spec, subscribers=[self], keep_text=keep_text, control=control, claim=claim)
        await self._put(_END)
        return result


@asynccontextmanager
async def open_guest_batch(
    spec: BatchSpec, *, buffer: int, keep_text: bool, claim: LogClaim | None = None
) -> AsyncIterator[GuestBatch]:
    """Run ``spec`` on a trio guest in the background of the ``async with`` block (asyncio).

    Leaving the block stops delivery to the iterator and waits for the batch to finish; call
    ``batch.cancel()`` first to stop it early. An exception in the block (or the task being
    cancelled) stops the batch gracefully before it propagates.
    """
    preflight(spec)  # bad input raises here, before the block runs
    guest = Guest()
    batch = GuestBatch(guest, buffer)
    running = batch._running = asyncio.ensure_future(
        guest.run(lambda control: batch.execute(spec, keep_text, control, claim), watch_sigint=False)
    )
    try:
        yield batch
    except BaseException:
        guest.cancel("cancelled")
        batch.close()
        await asyncio.shield(asyncio.wait([running]))
        if not running.cancelled():
            running.exception()  # retrieved: the block's own exception is the one that matters
        raise
    batch.close()
    batch.result = await running
