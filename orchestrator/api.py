"""The library entry points: :func:`run_batch` (synchronous) and :func:`open_batch` (inside trio).

Both take the same keywords, :class:`~orchestrator.config.library.BatchKeywords`, checked by
:func:`~orchestrator.config.library.library_batch`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Unpack

import attrs
import trio

from orchestrator.config.library import BatchKeywords, QueryLike, library_batch
from orchestrator.events import Tagged
from orchestrator.record.resume import plan
from orchestrator.run.bus import CallbackSubscriber, Subscriber
from orchestrator.run.runner import BatchResult, BatchRun, execute, open_spec
from orchestrator.spec import BatchSpec

__all__ = ["BatchKeywords", "QueryLike", "open_batch", "run_batch"]


def _spec(entry: str, queries: Iterable[QueryLike], keywords: BatchKeywords) -> BatchSpec:
    spec = library_batch(entry, queries, keywords)
    resume = keywords.get("resume")
    if resume is None:
        return spec
    if not os.path.exists(resume):  # first run of an idempotent script: start the log
        return attrs.evolve(spec, log=resume)
    planned = plan(spec, resume, retry_failed=keywords.get("retry_failed", False))
    return attrs.evolve(planned.spec, already_done=planned.already_done)


def run_batch(
    queries: Iterable[QueryLike],
    *,
    on_event: Callable[[Tagged], object] | None = None,
    **keywords: Unpack[BatchKeywords],
) -> BatchResult:
    """Run every query and return the batch result (starts and ends its own trio run).

    ``queries`` are prompts, :class:`Query` objects or job-like mappings; the keywords are
    :class:`~orchestrator.config.library.BatchKeywords` (``backend``, ``concurrency``, ``retry``,
    ``timeouts``, ``log``, ``options``, ``model``, ...), shared with :func:`open_batch`.
    ``on_event`` is called with every tagged event, on the bus, in per-job order.
    ``resume`` names a log: jobs it shows succeeded (same id and content hash) are not run again
    and this run is appended to it (a missing log is simply started). ``retry_failed`` reruns
    only the jobs whose last outcome there was a failure. Results hold the jobs run now.
    Raises :class:`~orchestrator.errors.ConfigError` for bad input, before anything runs; each
    problem names the argument (``run_batch(retry=...): ...``).
    """
    spec = _spec("run_batch", queries, keywords)
    subscribers: list[Subscriber] = [CallbackSubscriber(on_event)] if on_event is not None else []
    keep_text = keywords.get("keep_text", True)
    return trio.run(lambda: execute(spec, subscribers=subscribers, keep_text=keep_text))


@asynccontextmanager
async def open_batch(
    queries: Iterable[QueryLike],
    *,
    buffer: int = 1024,
    **keywords: Unpack[BatchKeywords],
) -> AsyncIterator[BatchRun]:
    """Run a batch in the background of an ``async with`` block, inside your trio program::

        async with open_batch(["a", "b"]) as batch:
            async for tagged in batch:
                print(tagged.job_id, tagged.event.kind)
        print(batch.result.summary)

    The keywords are those of :func:`run_batch` (``resume`` included). Events wait in a buffer
    of ``buffer`` events; a reader that falls behind slows the batch. Leaving the block stops
    delivery to the iterator and waits for the batch to finish; call ``batch.cancel()`` first to
    stop it early. Cancelling the surrounding scope tears it down.
    """
    spec = _spec("open_batch", queries, keywords)
    async with open_spec(spec, buffer=buffer, keep_text=keywords.get("keep_text", True)) as run:
        yield run
