"""Python's cyclic garbage collector during a batch: fewer full collections while it runs.

A batch keeps one result per finished job and moves many small objects (events, attempt state)
through its bus. With the interpreter's default thresholds the older generations are collected
again and again as that state grows: on a 100,000-job sim batch the collector took about 40 % of
the CPU, and found no garbage at all (reference counting frees events and attempt state; results
live to the end). So while any batch runs in the process, the thresholds of generations 1 and 2
are raised to at least :data:`OLDER_GENERATIONS`; generation 0, where new cycles are found, is
collected as often as before. The thresholds found before are restored when the last running
batch ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

OLDER_GENERATIONS = 1000
"""The least threshold of generations 1 and 2 while a batch runs (the interpreter's: 10, 10). At
100, a 100,000-job sim batch still made 32 collections of its middle generation (about 6 % of
its CPU; nothing found); at 1,000, 3."""

_running = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_full_collections() -> Iterator[None]:
    """Raise the collector's older thresholds for the duration of a batch (see the module).

    Batches may overlap in one process (several ``open_batch`` at once): the thresholds are
    raised by the first to start and restored by the last to end, whatever the order.
    """
    global _running, _saved
    if _running == 0:
        _saved = gc.get_threshold()
        young, older, oldest = _saved
        gc.set_threshold(young, max(older, OLDER_GENERATIONS), max(oldest, OLDER_GENERATIONS))
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None
