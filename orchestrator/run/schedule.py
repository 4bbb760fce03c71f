"""Which job a free worker runs next.

The runner keeps ``concurrency`` worker tasks; each takes a job from this queue, runs one attempt
and either finishes the job or hands it back with a time at which it may run again. A job waiting
out its backoff therefore holds no worker and no task, and the number of attempts in flight can
never exceed the number of workers.

Jobs wait in lanes, one per backend: retries whose backoff is over first, then new jobs in order.
A worker only takes a job from a lane that has room (its backend has a free slot and is not
paused), so a slow, tightly limited backend cannot hold every worker while the jobs of another
backend wait. Lanes with room take turns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

import trio

from orchestrator.timers import Timeline

T = TypeVar("T")


class _Lane(Generic[T]):
    def __init__(self) -> None:
        self.ready: deque[T] = deque()
        self.new: deque[T] = deque()

    def pop(self) -> T | None:
        if self.ready:
            return self.ready.popleft()
        if self.new:
            return self.new.popleft()
        return None

    def __bool__(self) -> bool:
        return bool(self.ready or self.new)


class JobQueue(Generic[T]):
    """Jobs waiting for a worker. All methods run on the batch's trio thread.

    ``lane_of(job)`` names a job's lane; ``room(lane)`` says whether that lane may start an
    attempt now. Whoever makes room (a slot freed, a pause over) calls :meth:`wake`.
    """

    def __init__(
        self,
        jobs: Iterable[T],
        lane_of: Callable[[T], Hashable] = lambda job: None,
        room: Callable[[Hashable], bool] = lambda lane: True,
        *,
        expected: int | None = None,
    ) -> None:
        """``expected`` counts every job the queue will see, when some arrive later through
        :meth:`add`; by default the queue holds all of them from the start."""
        self._lane_of = lane_of
        self._room = room
        self._lanes: dict[Hashable, _Lane[T]] = {}
        count = 0
        for job in jobs:
            self._lane(job).new.append(job)
            count += 1
        self._turn = 0
        self._urgent: deque[T] = deque()  # due jobs that need no room (their end is decided)
        self._delayed: Timeline[tuple[T | None, bool]] = Timeline()  # (job or a wake-up, urgent)
        self._unfinished = count if expected is None else expected
        self._to_come = self._unfinished - count  # expected jobs not added yet
        self._accepting = True
        self._closed_lanes: set[Hashable] = set()
        self._lot = trio.lowlevel.ParkingLot()
        self._waiting_new = count  # new jobs in the lanes
        self._room_for: int | None = None  # wake the adder once fewer new jobs wait than this
        self._adder = trio.lowlevel.ParkingLot()

    def _lane(self, job: T) -> _Lane[T]:
        key = self._lane_of(job)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        return lane

    def take_nowait(self) -> T | None:
        """The next job of a lane with room, lanes taking turns; None if there is none."""
        if self._urgent:
            return self._urgent.popleft()
        if len(self._lanes) == 1:  # the common case: one backend, no turns to take
            ((key, lane),) = self._lanes.items()
            return self._pop(lane) if lane and self._room(key) else None
        lanes = list(self._lanes.items())
        for i in range(len(lanes)):
            key, lane = lanes[(self._turn + i) % len(lanes)]
            if lane and self._room(key):
                self._turn = (self._turn + i + 1) % len(lanes)
                return self._pop(lane)
        return None

    def _pop(self, lane: _Lane[T]) -> T | None:
        if not lane.ready:
            self._waiting_new -= 1
            if self._room_for is not None and self._waiting_new < self._room_for:
                self._room_for = None
                self._adder.unpark_all()
        return lane.pop()

    async def wait_for_room(self, most: int) -> None:
        """Wait until fewer than ``most`` new jobs wait in the lanes, or new jobs are no longer
        accepted (:meth:`drop_new`). For the one task that adds jobs; cancellation-safe (no
        state changes)."""
        while self._accepting and self._waiting_new >= most:
            self._room_for = most
            await self._adder.park()

    async def take(self) -> T | None:
        """The next job to run, waiting if none can run now; None once every job has finished.

        Cancellation: a cancelled caller takes no job (it is checked before taking), and a
        waiting one is simply woken; no job is lost, since none was taken.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            job = self.take_nowait()
            if job is not None:
                return job
            if self._unfinished == 0:
                return None
            await self._lot.park()

    @property
    def accepting(self) -> bool:
        """False once :meth:`drop_new` has been called: new jobs would not start."""
        return self._accepting

    def add(self, jobs: Iterable[T]) -> None:
        """Jobs counted in ``expected`` join their lanes as new; ignored after :meth:`drop_new`
        (which already counted them as finished)."""
        if not self._accepting:
            return
        added = dropped = 0
        for job in jobs:
            if self._closed_lanes and self._lane_of(job) in self._closed_lanes:
                dropped += 1
                continue
            self._lane(job).new.append(job)
            added += 1
        self._waiting_new += added
        self._to_come -= added + dropped
        if dropped:
            self._finish(dropped)
        self.wake(added)

    def not_queued(self, count: int = 1) -> None:
        """``count`` jobs counted in ``expected`` will never be added: they end without a worker
        (a job whose identical request another job sends). Ignored after :meth:`drop_new`
        (which already counted them as finished)."""
        if not self._accepting:
            return
        self._to_come -= count
        self._finish(count)

    def wake(self, count: int = 1) -> None:
        """Room was made somewhere: let waiting workers look again (if any job is waiting: at
        the end of a batch, idle workers would only wake to park again)."""
        if self._lot and (self._urgent or any(self._lanes.values())):
            self._lot.unpark(count=count)

    def wake_at(self, when: float) -> None:
        """Let waiting workers look again at trio time ``when`` (a pause ends)."""
        self._push(when, None, False)

    def later(self, job: T, due: float, *, urgent: bool = False) -> None:
        """Hand ``job`` back, to be ready again at trio time ``due``; an ``urgent`` job (one that
        will only be ended, e.g. by its timeout) is served then even if its lane has no room."""
        self._push(due, job, urgent)

    def _push(self, due: float, job: T | None, urgent: bool) -> None:
        self._delayed.push(due, (job, urgent))

    def drop_new(self, also_taken: int = 0) -> None:
        """Start no more new jobs (they stay unstarted); ``also_taken`` counts jobs already taken
        from the queue that will not run either."""
        dropped = sum(len(lane.new) for lane in self._lanes.values()) + self._to_come
        for lane in self._lanes.values():
            lane.new.clear()
        self._accepting, self._to_come = False, 0
        self._new_gone(self._waiting_new)
        self._finish(dropped + also_taken)

    def close_lane(self, lane: Hashable) -> None:
        """Start no more new jobs of one lane (now or added later); they stay unstarted. Jobs of
        the lane that already ran keep their retries."""
        self._closed_lanes.add(lane)
        queue = self._lanes.get(lane)
        if queue is not None and queue.new:
            count = len(queue.new)
            queue.new.clear()
            self._new_gone(count)
            self._finish(count)

    def _new_gone(self, count: int) -> None:
        self._waiting_new -= count
        self._room_for = None
        self._adder.unpark_all()

    def finished(self) -> None:
        """One job has ended for good; when none is left, every waiting worker is released."""
        self._finish(1)

    def _finish(self, count: int) -> None:
        self._unfinished -= count
        if self._unfinished == 0:
            self._lot.unpark_all()
            self._delayed.wake()

    async def run_timer(self) -> None:
        """Move delayed jobs to their lanes when they come due, until every job has finished."""
        while self._unfinished:
            woken = 0
            for job, urgent in self._delayed.pop_due(trio.current_time()):
                if job is not None:
                    (self._urgent if urgent else self._lane(job).ready).append(job)
                woken += 1
            if woken:
                self._lot.unpark(count=woken)
            await self._delayed.sleep()
