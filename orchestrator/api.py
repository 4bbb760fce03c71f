"""The library entry points: :func:`run_batch` (synchronous) and :func:`open_batch` (inside trio)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from orchestrator.config.jobfile import build_batch
from orchestrator.events import Tagged
from orchestrator.record.claim import claim_log
from orchestrator.record.resume import plan
from orchestrator.run.bus import CallbackSubscriber, Subscriber
from orchestrator.run.runner import BatchResult, BatchRun, execute, open_spec, preflight
from orchestrator.spec import BatchSpec, Query, RetryPolicy, Timeouts

QueryLike = str | Query | Mapping[str, Any]


def _spec(
    queries: Iterable[QueryLike],
    *,
    backend: str,
    concurrency: int,
    retry: RetryPolicy | Mapping[str, Any] | None,
    timeouts: Timeouts | Mapping[str, Any] | None,
    log: str | None,
    seed: int,
    deadline: float | None,
    options: Mapping[str, Any] | None,
    backend_settings: Mapping[str, Mapping[str, Any]] | None,
    job_defaults: Mapping[str, Any],
    resume: str | None = None,
) -> BatchSpec:
    defaults: dict[str, Any] = {"backend": backend, "concurrency": concurrency, "seed": seed, **job_defaults}
    if log is not None:
        defaults["log"] = log
    if deadline is not None:
        defaults["deadline"] = deadline
    if retry is not None:
        defaults["retry"] = attrs.asdict(retry) if isinstance(retry, RetryPolicy) else dict(retry)
    if timeouts is not None:
        defaults["timeouts"] = attrs.asdict(timeouts) if isinstance(timeouts, Timeouts) else dict(timeouts)
    if options:
        defaults[backend] = dict(options)
    if backend_settings:
        defaults["backends"] = {name: dict(s) for name, s in backend_settings.items()}
    spec = build_batch(queries, defaults)
    return spec if resume is None else attrs.evolve(spec, log=resume)


def _resumed(spec: BatchSpec, retry_failed: bool) -> BatchSpec:
    """The batch less what its log shows done (the caller holds the log's claim); a log that
    does not exist yet is simply started (the first run of an idempotent script)."""
    assert spec.log is not None
    if not os.path.exists(spec.log):
        return spec
    planned = plan(spec, spec.log, retry_failed=retry_failed)
    return attrs.evolve(planned.spec, already_done=planned.already_done)


def run_batch(
    queries: Iterable[QueryLike],
    *,
    backend: str = "sim",
    concurrency: int = 16,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    timeouts: Timeouts | Mapping[str, Any] | None = None,
    on_event: Callable[[Tagged], object] | None = None,
    log: str | None = None,
    seed: int = 0,
    deadline: float | None = None,
    options: Mapping[str, Any] | None = None,
    backend_settings: Mapping[str, Mapping[str, Any]] | None = None,
    keep_text: bool = True,
    resume: str | None = None,
    retry_failed: bool = False,
    force: bool = False,
    **job_defaults: Any,
) -> BatchResult:
    """Run every query and return the batch result (starts and ends its own trio run).

    ``queries`` are prompts, :class:`Query` objects or job-like mappings. ``options`` are the
    backend's per-job options; ``backend_settings`` maps backend names to batch-wide settings;
    other keywords (``model``, ``system``, ``max_tokens``, ``temperature``) are job defaults.
    ``on_event`` is called with every tagged event, on the bus, in per-job order.
    ``resume`` names a log: jobs it shows succeeded (same id and content hash) are not run again
    and this run is appended to it (a missing log is simply started). ``retry_failed`` reruns
    only the jobs whose last outcome there was a failure. Results hold the jobs run now.
    Raises :class:`~orchestrator.errors.ConfigError` for bad input, before anything runs: also
    when the log is in use by another run, is not a log, or is a log of a job file (written by
    ``orchestrate``) unless ``force``. A log write that fails mid-run (a full disk) raises
    :class:`~orchestrator.record.log.LogWriteError`; the log stays valid for ``resume``.
    """
    spec = _spec(
        queries,
        backend=backend,
        concurrency=concurrency,
        retry=retry,
        timeouts=timeouts,
        log=log,
        seed=seed,
        deadline=deadline,
        options=options,
        backend_settings=backend_settings,
        job_defaults=job_defaults,
        resume=resume,
    )
    subscribers: list[Subscriber] = [CallbackSubscriber(on_event)] if on_event is not None else []
    if spec.log is None or spec.log == "-":
        return trio.run(lambda: execute(spec, subscribers=subscribers, keep_text=keep_text))
    preflight(spec)
    with claim_log(spec.log, job_file=spec.source, force=force) as claim:  # before resume reads it
        if resume is not None:
            spec = _resumed(spec, retry_failed)
        run = spec
        return trio.run(lambda: execute(run, subscribers=subscribers, keep_text=keep_text, claim=claim))


@asynccontextmanager
async def open_batch(
    queries: Iterable[QueryLike],
    *,
    backend: str = "sim",
    concurrency: int = 16,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    timeouts: Timeouts | Mapping[str, Any] | None = None,
    log: str | None = None,
    seed: int = 0,
    deadline: float | None = None,
    options: Mapping[str, Any] | None = None,
    backend_settings: Mapping[str, Mapping[str, Any]] | None = None,
    keep_text: bool = True,
    buffer: int = 1024,
    **job_defaults: Any,
) -> AsyncIterator[BatchRun]:
    """Run a batch in the background of an ``async with`` block, inside your trio program::

        async with open_batch(["a", "b"]) as batch:
            async for tagged in batch:
                print(tagged.job_id, tagged.event.kind)
        print(batch.result.summary)

    Events wait in a buffer of ``buffer`` events; a reader that falls behind slows the batch.
    Leaving the block stops delivery to the iterator and waits for the batch to finish; call
    ``batch.cancel()`` first to stop it early. Cancelling the surrounding scope tears it down.
    """
    spec = _spec(
        queries,
        backend=backend,
        concurrency=concurrency,
        retry=retry,
        timeouts=timeouts,
        log=log,
        seed=seed,
        deadline=deadline,
        options=options,
        backend_settings=backend_settings,
        job_defaults=job_defaults,
    )
    async with open_spec(spec, buffer=buffer, keep_text=keep_text) as run:
        yield run
