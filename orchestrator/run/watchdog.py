"""One task that notices stalled streams and overdue attempts, for the whole batch at once.

A timeout scope per read would cost a deadline update per event; instead each attempt records
the time of its last event (a float store) and this task wakes only when some attempt's
``last + idle`` comes due, re-checks it, and cancels that attempt's scope if it really was idle.
Exact under trio's virtual clock.

A backend may say more than its events do, about the attempt its task is running (the watch is
found through a context variable, set when the attempt's watch starts): :func:`signs_of_life`
(the server sent something that is not an event, such as an SSE keep-alive comment: not idle) and
:func:`wait_for_first_event` (the backend times the wait for its first event itself, so idle does
not count until then).
"""

from __future__ import annotations

import math
import operator
from contextvars import ContextVar

import attrs
import trio

from orchestrator.timers import Timeline


@attrs.define(slots=True, eq=False)
class Watch:
    """One attempt under watch. ``touch`` after every event; ``pause`` while the runner is the
    one keeping the stream waiting (backpressure), so a slow consumer is never called a stall.
    ``fired`` says why the scope was cancelled: ``"idle"`` or ``"deadline"``."""

    scope: trio.CancelScope
    idle: float
    deadline: float
    last: float
    paused: bool = False
    active: bool = True
    fired: str | None = None

    def touch(self, now: float) -> None:
        self.last = now
        self.paused = False

    def close(self) -> None:
        self.active = False


_active = operator.attrgetter("active")  # a watch still wanted (one C call per heap entry)
_ATTEMPT: ContextVar[Watch | None] = ContextVar("attempt_watch", default=None)


def signs_of_life() -> None:
    """The running attempt's stream is alive without an event (a keep-alive): its idle time
    starts again. Does not end a :func:`wait_for_first_event` wait. No-op outside a watch."""
    watch = _ATTEMPT.get()
    if watch is not None:
        watch.last = trio.current_time()


def wait_for_first_event() -> None:
    """The running attempt times the wait for its first event itself: idle does not count until
    its next event (``emit`` touches the watch). Deadlines still count. No-op outside a watch."""
    watch = _ATTEMPT.get()
    if watch is not None:
        watch.paused = True


class IdleWatchdog:
    """Cancels the scope of any watched attempt that has had no event for ``idle`` seconds or
    has reached its ``deadline``. One task and one heap for the whole batch: cheaper than a
    trio deadline per attempt, and exact under trio's virtual clock."""

    def __init__(self) -> None:
        self._timeline: Timeline[Watch] = Timeline()
        self._closed = 0

    def release(self, watch: Watch) -> None:
        """The attempt ended: stop watching it.

        Its heap entry stays until due (an attempt deadline can be many minutes away), so once
        most entries belong to ended attempts the heap is rebuilt without them: memory stays
        bounded by the attempts in flight, at amortised constant cost.
        """
        watch.close()
        if _ATTEMPT.get() is watch:
            _ATTEMPT.set(None)
        self._closed += 1
        if self._closed > 1024 and self._closed * 2 > len(self._timeline):
            self._timeline.keep(_active)
            self._closed = 0

    def watch(
        self,
        scope: trio.CancelScope,
        idle: float | None,
        deadline: float | None = None,
        *,
        now: float | None = None,
    ) -> Watch:
        """Start watching ``scope``, the calling task's attempt, as of ``now`` (default: the
        current trio time); the caller must :meth:`release` the watch when the attempt ends,
        from the same task."""
        if now is None:
            now = trio.current_time()
        watch = Watch(
            scope=scope,
            idle=math.inf if idle is None else idle,
            deadline=math.inf if deadline is None else deadline,
            last=now,
        )
        self._timeline.push(min(now + watch.idle, watch.deadline), watch)
        _ATTEMPT.set(watch)  # the calling task's attempt, for signs_of_life and wait_for_first_event
        return watch

    def _check(self, watch: Watch, now: float) -> None:
        if watch.deadline <= now:
            reason = "deadline"
        elif not watch.paused and watch.last + watch.idle <= now:
            reason = "idle"
        else:
            # Still fine; while paused only the deadline counts, so look again after one idle span.
            due = min(now + watch.idle if watch.paused else watch.last + watch.idle, watch.deadline)
            self._timeline.push(due, watch)
            return
        watch.fired = reason
        watch.active = False
        watch.scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled. Holds no resources, so cancellation is always clean."""
        task_status.started()
        while True:
            now = trio.current_time()
            for watch in self._timeline.pop_due(now):
                if watch.active:
                    self._check(watch, now)  # pushes it again if it is still fine: due after now
            await self._timeline.sleep()
