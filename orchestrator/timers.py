"""One heap of due times and one task sleeping until the next: the shape of every timer here.

The idle watchdog, the job queue's backoff timer and the simulator's clock each serve thousands
of deadlines with a single trio task instead of a cancel scope per deadline. :class:`Timeline`
is what they share: items pushed with a due time, taken back out once due, and a sleep that ends
when the earliest item comes due, even one pushed while the task was already asleep. Exact under
trio's virtual clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Timeline(Generic[T]):
    """Items due at trio times. All methods run on the batch's trio thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()  # equal due times come out in the order pushed
        self._sleep: trio.CancelScope | None = None
        self._wakes_at = -math.inf  # the sleep's deadline, kept here (-inf: not asleep)

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, item: T) -> None:
        """Add ``item``, due at trio time ``due``; wakes the sleeper if that is sooner."""
        heapq.heappush(self._heap, (due, next(self._order), item))
        # The sleep's deadline as a float, not the scope's property: most pushes are for later.
        if due < self._wakes_at:
            assert self._sleep is not None
            self._sleep.deadline = self._wakes_at = due

    def pop_due(self, now: float) -> Iterator[T]:
        """Take out every item due at or before ``now``, earliest first."""
        while self._heap and self._heap[0][0] <= now:
            yield heapq.heappop(self._heap)[2]

    def keep(self, wanted: Callable[[T], bool]) -> None:
        """Drop every item that is no longer ``wanted`` (in time linear in the items)."""
        self._heap = [entry for entry in self._heap if wanted(entry[2])]
        heapq.heapify(self._heap)

    async def sleep(self) -> None:
        """Sleep until the earliest item is due (for ever if there is none), or until
        :meth:`wake`. Cancellation simply ends the sleep; nothing is taken out."""
        deadline = self._heap[0][0] if self._heap else math.inf
        try:
            with trio.CancelScope(deadline=deadline) as self._sleep:
                self._wakes_at = deadline
                await trio.sleep_forever()
        finally:
            self._sleep = None
            self._wakes_at = -math.inf

    def wake(self) -> None:
        """End the current sleep now (for instance: there is nothing left to wait for)."""
        if self._sleep is not None:
            self._sleep.cancel()
