"""Ctrl-C while remote batches run: leave them running (detach) or cancel them.

On an interactive terminal, the first Ctrl-C of a run whose batch backends have remote batches
running asks which, before the run stops: ``c`` + Enter cancels them, anything else (or
nothing within :data:`DETACH_AFTER` seconds, or a second Ctrl-C) leaves them running for
``--resume`` to collect. Elsewhere nothing is asked: ``--cancel-remote`` (or the backend's
``cancel_remote`` setting) decides.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import trio

from orchestrator.run.control import RunControl

DETACH_AFTER = 10.0
"""Seconds the question waits for an answer before it detaches."""


async def read_stdin_line() -> str:
    """One line from stdin, read in a thread (abandoned, still blocked, if cancelled)."""
    return await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


def ask_on_interrupt(
    control: RunControl,
    running: Callable[[], int],
    *,
    say: Callable[[str], object],
    read_line: Callable[[], Awaitable[str]] = read_stdin_line,
) -> Callable[[int, AsyncIterator[int]], Awaitable[None]]:
    """The ``before_stop`` of :func:`~orchestrator.run.host.watch_signals` that asks, when
    ``running()`` remote batches are more than none, and sets ``control.cancel_remote``."""

    async def before_stop(signum: int, signals: AsyncIterator[int]) -> None:
        count = running()
        if signum != signal.SIGINT or count == 0:
            return
        batches = f"{count} remote batch{'es' if count > 1 else ''}"
        say(
            f"{batches} still running. [d]etach (default: they run on and `orchestrate --resume` collects "
            f"them) or [c]ancel them? Detaching in {DETACH_AFTER:g}s; Ctrl-C again detaches now."
        )
        answer = ""
        with trio.move_on_after(DETACH_AFTER):
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    nonlocal answer
                    answer = await read_line()
                    nursery.cancel_scope.cancel()

                async def again() -> None:
                    await signals.__anext__()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(read)
                nursery.start_soon(again)
        control.cancel_remote = answer.strip().lower() in ("c", "cancel")
        say(
            f"cancelling the {batches}"
            if control.cancel_remote
            else f"leaving the {batches} running: `orchestrate --resume` collects them"
        )

    return before_stop
