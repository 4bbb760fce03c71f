"""One measurement in a fresh interpreter, so that the programs compared start from the same
process state whatever ran before them: a bare program's cost is mostly the memory it maps, and
in a process that had mapped it already it ran up to 3x faster."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


def in_fresh_process(measure: Callable[..., float], *args: Any) -> float:
    """``measure(*args)`` run in a newly spawned interpreter (``measure`` must be a module-level
    function); what it returned."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        value: float = pool.apply(measure, args)
    return value
