"""A job while its run holds it: its state (:class:`~orchestrator.run.job.JobState`) bound to the
run that sends its events, and the sending itself: each event tagged with the job's id,
attempt, ``seq`` and time, into the bus, with the idle watch kept up to date.

Every event of a batch passes here, so the path of one event is a handful of attribute reads
and one tuple; only a full bus (a slow consumer) makes a send wait.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import attrs
import trio

from orchestrator.events import Event, RateLimitInfo, StreamEvent, Tagged
from orchestrator.run.job import OBSERVED, JobState
from orchestrator.run.limits import Ticket

if TYPE_CHECKING:
    from orchestrator.run.runner import Run

# Tagged(...) goes through the named tuple's Python-level __new__; this is one C call.
_tagged = functools.partial(tuple.__new__, Tagged)


@attrs.define(slots=True, eq=False)
class LiveJob(JobState):
    """A job's state (:class:`~orchestrator.run.job.JobState`) bound to the run that sends its events."""

    run: Run = attrs.field(kw_only=True)
    ticket: Ticket | None = attrs.field(default=None, kw_only=True)  # its attempt's, at the gate
    following: bool = attrs.field(default=False, kw_only=True)  # its job_deduplicated is sent

    def emit_nowait(self, event: Event) -> bool:
        """Tag and send one event if the bus has room (True), without yielding to the scheduler;
        False, with nothing sent, when the bus is full. Not for the kinds a job's state looks
        at (:data:`~orchestrator.run.job.OBSERVED`): :meth:`emit` does that."""
        # On the path of every event: a handful of attribute reads and one tuple, nothing more
        # (the time to the microsecond: batch_time, inlined).
        run = self.run
        now = run.now()
        try:
            run.send.send_nowait(
                _tagged(
                    (self.spec.id, self.attempt, self.seq, int((now - run.t0) * 1e6 + 0.5) / 1e6, event, None)
                )
            )
        except trio.WouldBlock:
            return False
        self.seq += 1
        watch = self.watch
        if watch is not None:  # Watch.touch, inlined: an event also ends a wait for the first one
            watch.last = now
            watch.paused = False
        return True

    async def emit(self, event: Event) -> None:
        """Tag and send one event. Not to be called from two tasks at once (seq order).

        While the bus has room this returns without yielding to the scheduler: a checkpoint per
        event would cap the whole batch near 100k events/s. Only a full channel (a slow
        consumer) makes it wait, and then the idle watchdog is paused, since the stream is not
        the one stalling. A job's terminal event goes through :meth:`Run.send_end`.
        """
        if not self.emit_nowait(event):
            await self._emit_waiting(event)
        if type(event) in OBSERVED:  # what it changes: the job's state, or its backend's gate
            if type(event) is RateLimitInfo:
                await self._tell_gate(event)
            else:
                self.observe(event)

    async def _tell_gate(self, info: RateLimitInfo) -> None:
        """The job's backend's gate hears what the server said (rate-limit headers)."""
        await self.run.gates[self.spec.backend].observe(self.spec.model, info, self.ticket)

    async def _emit_waiting(self, event: Event) -> None:
        """:meth:`emit`'s send when the bus is full: wait for room, the idle watch paused."""
        run = self.run
        watch = self.watch
        if watch is not None:
            watch.paused = True
        await run.send.send(
            _tagged((self.spec.id, self.attempt, self.seq, batch_time(run.now() - run.t0), event, None))
        )
        self.seq += 1
        if watch is not None:
            watch.last = run.now()
            watch.paused = False

    async def emit_from_backend(self, event: StreamEvent) -> None:
        """The ``emit`` a backend gets: :meth:`emit`, with the batch's secrets hidden first.
        (Its body rather than a call to it: no coroutine but this one for an event of a stream.)"""
        event = self.run.redactor.value(event)  # secrets: see orchestrator.redact
        if not self.emit_nowait(event):
            await self._emit_waiting(event)
        if type(event) in OBSERVED:  # what it changes: the job's state, or its backend's gate
            if type(event) is RateLimitInfo:
                await self._tell_gate(event)
            else:
                self.observe(event)


def batch_time(seconds: float) -> float:
    """An event's ``ts``: ``seconds`` (not negative) since the batch started, to the microsecond.
    Half a microsecond rounds up. ``round(seconds, 6)`` gives the same but for values within a
    rounding error of a half microsecond, at three times the cost (on the path of every event)."""
    return int(seconds * 1e6 + 0.5) / 1e6
