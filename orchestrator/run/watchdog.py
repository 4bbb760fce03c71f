"""One task that notices stalled streams and overdue attempts, for the whole batch at once.

A timeout scope per read would cost a deadline update per event; instead each attempt records
the time of its last event (a float store) and this task wakes only when some attempt's
``last + idle`` comes due, re-checks it, and cancels that attempt's scope if it really was idle.
Exact under trio's virtual clock.
"""

from __future__ import annotations

import math

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
        self._closed += 1
        if self._closed > 1024 and self._closed * 2 > len(self._timeline):
            self._timeline.keep(lambda watch: watch.active)
            self._closed = 0

    def watch(self, scope: trio.CancelScope, idle: float | None, deadline: float | None = None) -> Watch:
        """Start watching ``scope``; the caller must ``close()`` the watch when the attempt ends."""
        now = trio.current_time()
        watch = Watch(
            scope=scope,
            idle=math.inf if idle is None else idle,
            deadline=math.inf if deadline is None else deadline,
            last=now,
        )
        self._timeline.push(min(now + watch.idle, watch.deadline), watch)
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
