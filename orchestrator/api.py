"""The library entry points: :func:`run_batch` (synchronous), :func:`run_batch_async` and
:func:`open_batch` (inside trio or asyncio, a Jupyter cell included; see :mod:`orchestrator.run.host`).

All take the same keywords, :class:`~orchestrator.config.library.BatchKeywords`, checked by
:func:`~orchestrator.config.library.library_batch`. A batch with a log claims it for the whole
run (see :mod:`orchestrator.record.claim`) before a resume reads it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, nullcontext
from typing import Unpack

import attrs

from orchestrator.config.library import BatchKeywords, QueryLike, library_batch
from orchestrator.engines import Engine, engine_named
from orchestrator.errors import ConfigError
from orchestrator.events import Tagged
from orchestrator.record.claim import LogClaim, claim_log
from orchestrator.record.resume import plan
from orchestrator.run import host
from orchestrator.run.batch import BatchResult, BatchRun, execute, open_spec, preflight
from orchestrator.run.bus import CallbackSubscriber, Subscriber
from orchestrator.run.control import RunControl
from orchestrator.spec import BatchSpec

__all__ = ["BatchKeywords", "QueryLike", "open_batch", "run_batch", "run_batch_async"]


def _prepared(
    entry: str, queries: Iterable[QueryLike], keywords: BatchKeywords
) -> tuple[BatchSpec, LogClaim | None]:
    """The batch to run and its log's claim (None without a log). Bad input raises first; the
    claim is taken before a resume reads the log, and the batch is then less what it shows done
    (a log that does not exist yet is simply started: the first run of an idempotent script)."""
    spec = library_batch(entry, queries, keywords)
    resume = keywords.get("resume")
    if resume is not None:
        spec = attrs.evolve(spec, log=resume)
    if spec.log is None or spec.log == "-":
        return spec, None
    preflight(spec)
    claim = claim_log(spec.log, job_file=spec.source, force=keywords.get("force", False))
    if resume is None or not os.path.exists(resume):
        return spec, claim
    try:
        planned = plan(spec, resume, retry_failed=keywords.get("retry_failed", False))
    except BaseException:
        claim.release()
        raise
    return attrs.evolve(planned.spec, already_done=planned.already_done), claim


def _engine(keywords: BatchKeywords) -> Engine | None:
    """The engine the keywords ask for (None: the local one); ConfigError for a bad one."""
    name, address = keywords.get("engine", "local"), keywords.get("address")
    if name == "local" and address is None:
        return None
    return engine_named(name, address)


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
    ``backend`` is required unless every query names its own (there is no silent simulator).
    ``on_event`` is called with every tagged event, on the bus, in per-job order.
    ``resume`` names a log: jobs it shows succeeded (same id and content hash) are not run again
    and this run is appended to it (a missing log is simply started). ``retry_failed`` reruns
    only the jobs whose last outcome there was a failure. Results hold the jobs run now.

    Ctrl-C stops the batch as the CLI does (in-flight attempts cancelled, every job's terminal
    event and the summary logged), then raises a plain :class:`KeyboardInterrupt`. Inside a
    running event loop (asyncio, trio, a Jupyter cell) it raises :class:`RuntimeError`: use
    :func:`run_batch_async` or :func:`open_batch` there.

    Raises :class:`~orchestrator.errors.ConfigError` for bad input, before anything runs (each
    problem names the argument: ``run_batch(retry=...): ...``); also when the log is in use by
    another run, is not a log, or is a log of a job file (written by ``orchestrate``) unless
    ``force``. A log write that fails mid-run (a full disk) raises
    :class:`~orchestrator.record.log.LogWriteError`; the log stays valid for ``resume``.
    """
    host.refuse_running_loop("run_batch")
    engine = _engine(keywords)
    spec, claim = _prepared("run_batch", queries, keywords)
    subscribers: list[Subscriber] = [CallbackSubscriber(on_event)] if on_event is not None else []
    keep_text = keywords.get("keep_text", True)

    async def main(control: RunControl) -> BatchResult:
        return await execute(
            spec, subscribers=subscribers, keep_text=keep_text, control=control, claim=claim, engine=engine
        )

    with claim or nullcontext():
        return host.run_blocking(main)


async def run_batch_async(
    queries: Iterable[QueryLike],
    *,
    on_event: Callable[[Tagged], object] | None = None,
    progress: bool = False,
    **keywords: Unpack[BatchKeywords],
) -> BatchResult:
    """:func:`run_batch` for a running asyncio loop (a Jupyter cell included) or trio program:
    ``result = await run_batch_async(prompts, backend="local")``.

    Under asyncio the batch runs on a trio guest run on the same loop, so the loop (and the
    notebook) stays responsive. Cancelling the awaiting task stops the batch gracefully and waits
    for its terminal events before the cancellation goes on. Under asyncio in the main thread,
    Ctrl-C does what it does in :func:`run_batch`. ``progress=True`` shows live progress: in a
    notebook a display under the cell that updates in place, elsewhere lines on stderr.
    """
    engine = _engine(keywords)
    spec, claim = _prepared("run_batch_async", queries, keywords)
    subscribers: list[Subscriber] = [CallbackSubscriber(on_event)] if on_event is not None else []
    keep_text = keywords.get("keep_text", True)

    async def main(control: RunControl) -> BatchResult:
        if not progress:
            return await execute(
                spec,
                subscribers=subscribers,
                keep_text=keep_text,
                control=control,
                claim=claim,
                engine=engine,
            )
        from orchestrator.cli.live import with_progress

        async def shown_run(shown: Sequence[Subscriber]) -> BatchResult:
            everyone = [*subscribers, *shown]
            return await execute(
                spec, subscribers=everyone, keep_text=keep_text, control=control, claim=claim, engine=engine
            )

        return await with_progress(shown_run)

    with claim or nullcontext():
        if host.running_loop_library() == "trio":
            return await main(RunControl())
        return await host.Guest().run(main)


@asynccontextmanager
async def open_batch(
    queries: Iterable[QueryLike],
    *,
    buffer: int = 1024,
    **keywords: Unpack[BatchKeywords],
) -> AsyncIterator[BatchRun | host.GuestBatch]:
    """Run a batch in the background of an ``async with`` block, inside your trio or asyncio
    program (a Jupyter cell included)::

        async with open_batch(["a", "b"], backend="local") as batch:
            async for tagged in batch:
                print(tagged.job_id, tagged.event.kind)
        print(batch.result.summary)

    The keywords are those of :func:`run_batch` (``resume`` and ``force`` included). Events wait
    in a buffer of ``buffer`` events; a reader that falls behind slows the batch. Leaving the
    block stops delivery to the iterator and waits for the batch to finish; call
    ``batch.cancel()`` first to stop it early. Under trio, cancelling the surrounding scope tears
    it down; under asyncio (a trio guest run, see :mod:`orchestrator.run.host`) an exception or a
    cancellation in the block stops the batch gracefully and waits for it before propagating.
    """
    if keywords.get("engine", "local") != "local" or keywords.get("address") is not None:
        raise ConfigError(["open_batch(engine=...): only the local engine; use run_batch(engine='ray')"])
    spec, claim = _prepared("open_batch", queries, keywords)
    keep_text = keywords.get("keep_text", True)
    with claim or nullcontext():
        if host.running_loop_library() == "trio":
            async with open_spec(spec, buffer=buffer, keep_text=keep_text, claim=claim) as run:
                yield run
        else:
            async with host.open_guest_batch(spec, buffer=buffer, keep_text=keep_text, claim=claim) as guest:
                yield guest
