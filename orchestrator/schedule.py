"""Which job a free worker runs next: retries whose backoff is over first, then new jobs in order.

The runner keeps ``concurrency`` worker tasks; each takes a job from this queue, runs one attempt
and either finishes the job or hands it back with a time at which it may run again. A job waiting
out its backoff therefore holds no worker and no task, and the number of attempts in flight can
never exceed the number of workers.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class JobQueue(Generic[T]):
    """Jobs waiting for a worker. All methods run on the batch's trio thread."""

    def __init__(self, jobs: Iterable[T], count: int) -> None:
        self._new: deque[T] = deque(jobs)
        self._ready: deque[T] = deque()
        self._delayed: list[tuple[float, int, T]] = []
        self._order = itertools.count()
        self._unfinished = count
        self._lot = trio.lowlevel.ParkingLot()
        self._timer: trio.CancelScope | None = None

    def take_nowait(self) -> T | None:
        if self._ready:
            return self._ready.popleft()
        if self._new:
            return self._new.popleft()
        return None

    async def take(self) -> T | None:
        """The next job to run, waiting if none is ready; None once every job has finished.

        Cancellation: a waiting worker is simply woken; no job is lost, since none was taken.
        """
        while True:
            job = self.take_nowait()
            if job is not None:
                return job
            if self._unfinished == 0:
                return None
            await self._lot.park()

    def later(self, job: T, due: float) -> None:
        """Hand ``job`` back, to be ready again at trio time ``due``."""
        heapq.heappush(self._delayed, (due, next(self._order), job))
        if self._timer is not None and due < self._timer.deadline:
            self._timer.deadline = due

    def drop_new(self, also_taken: int = 0) -> None:
        """Start no more new jobs (they stay unstarted); ``also_taken`` counts jobs already taken
        from the queue that will not run either."""
        self._unfinished -= len(self._new) + also_taken
        self._new.clear()
        if self._unfinished == 0:
            self._lot.unpark_all()
            if self._timer is not None:
                self._timer.cancel()

    def finished(self) -> None:
        """One job has ended for good; when none is left, every waiting worker is released."""
        self._unfinished -= 1
        if self._unfinished == 0:
            self._lot.unpark_all()
            if self._timer is not None:
                self._timer.cancel()

    async def run_timer(self) -> None:
        """Move delayed jobs to the ready queue when they come due, until every job has finished."""
        while self._unfinished:
            now = trio.current_time()
            woken = 0
            while self._delayed and self._delayed[0][0] <= now:
                self._ready.append(heapq.heappop(self._delayed)[2])
                woken += 1
            if woken:
                self._lot.unpark(count=woken)
            with trio.CancelScope(deadline=self._delayed[0][0] if self._delayed else math.inf) as self._timer:
                await trio.sleep_forever()
            self._timer = None
