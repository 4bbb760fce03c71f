"""The library entry points: :func:`run_batch` (synchronous) and :func:`open_batch` (inside trio).

Both take the same keywords, :class:`~orchestrator.config.library.BatchKeywords`, checked by
:func:`~orchestrator.config.library.library_batch`. A batch with a log claims it for the whole
run (see :mod:`orchestrator.record.claim`) before a resume reads it.
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
from orchestrator.record.claim import LogClaim, claim_log
from orchestrator.record.resume import plan
from orchestrator.run.bus import CallbackSubscriber, Subscriber
from orchestrator.run.runner import BatchResult, BatchRun, execute, open_spec, preflight
from orchestrator.spec import BatchSpec

__all__ = ["BatchKeywords", "QueryLike", "open_batch", "run_batch"]


def _spec(entry: str, queries: Iterable[QueryLike], keywords: BatchKeywords) -> BatchSpec:
    spec = library_batch(entry, queries, keywords)
    resume = keywords.get("resume")
    return spec if resume is None else attrs.evolve(spec, log=resume)


def _claim(spec: BatchSpec, keywords: BatchKeywords) -> LogClaim | None:
    """The log's claim, taken after preflight (bad input first) and before a resume reads it."""
    if spec.log is None or spec.log == "-":
        return None
    preflight(spec)
    return claim_log(spec.log, job_file=spec.source, force=keywords.get("force", False))


def _resumed(spec: BatchSpec, keywords: BatchKeywords) -> BatchSpec:
    """The batch less what its log shows done (the caller holds the log's claim); a log that
    does not exist yet is simply started (the first run of an idempotent script)."""
    if keywords.get("resume") is None or spec.log is None or not os.path.exists(spec.log):
        return spec
    planned = plan(spec, spec.log, retry_failed=keywords.get("retry_failed", False))
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

    Raises :class:`~orchestrator.errors.ConfigError` for bad input, before anything runs (each
    problem names the argument: ``run_batch(retry=...): ...``); also when the log is in use by
    another run, is not a log, or is a log of a job file (written by ``orchestrate``) unless
    ``force``. A log write that fails mid-run (a full disk) raises
    :class:`~orchestrator.record.log.LogWriteError`; the log stays valid for ``resume``.
    """
    spec = _spec("run_batch", queries, keywords)
    subscribers: list[Subscriber] = [CallbackSubscriber(on_event)] if on_event is not None else []
    keep_text = keywords.get("keep_text", True)
    claim = _claim(spec, keywords)
    if claim is None:
        return trio.run(lambda: execute(spec, subscribers=subscribers, keep_text=keep_text))
    with claim:
        run = _resumed(spec, keywords)
        return trio.run(lambda: execute(run, subscribers=subscribers, keep_text=keep_text, claim=claim))


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

    The keywords are those of :func:`run_batch` (``resume`` and ``force`` included). Events wait
    in a buffer of ``buffer`` events; a reader that falls behind slows the batch. Leaving the
    block stops delivery to the iterator and waits for the batch to finish; call
    ``batch.cancel()`` first to stop it early. Cancelling the surrounding scope tears it down.
    """
    spec = _spec("open_batch", queries, keywords)
    keep_text = keywords.get("keep_text", True)
    claim = _claim(spec, keywords)
    if claim is None:
        async with open_spec(spec, buffer=buffer, keep_text=keep_text) as run:
            yield run
        return
    with claim:
        spec = _resumed(spec, keywords)
        async with open_spec(spec, buffer=buffer, keep_text=keep_text, claim=claim) as run:
            yield run
