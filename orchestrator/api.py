"""The library entry points: :func:`run_batch` (synchronous), :func:`run_batch_async` and
:func:`open_batch` (inside trio or asyncio, a Jupyter cell included; see :mod:`orchestrator.run.host`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs

from orchestrator.config.jobfile import build_batch
from orchestrator.errors import ConfigError
from orchestrator.events import Tagged
from orchestrator.record.resume import plan
from orchestrator.run import host
from orchestrator.run.bus import CallbackSubscriber, Subscriber
from orchestrator.run.runner import BatchResult, BatchRun, RunControl, execute, open_spec
from orchestrator.spec import BatchSpec, Query, RetryPolicy, Timeouts

QueryLike = str | Query | Mapping[str, Any]

NO_BACKEND = (
    "backend: required: pass backend='local' (a small model on your CPU, offline), 'anthropic', "
    "'openai' or 'claude-code' (backend='sim' is a simulator: made-up answers and costs)"
)


def _backend_named(query: QueryLike) -> bool:
    if isinstance(query, Query):
        return query.backend is not None
    return isinstance(query, Mapping) and query.get("backend") is not None


def _spec(
    queries: Iterable[QueryLike],
    *,
    backend: str | None,
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
    retry_failed: bool = False,
) -> BatchSpec:
    # No silent simulator: every job names a real backend, or the caller chose sim on purpose.
    queries = list(queries)
    if backend is None and not all(_backend_named(query) for query in queries):
        raise ConfigError([NO_BACKEND])
    if backend is None and options:
        raise ConfigError(["options: these are one backend's per-job options: pass backend= too"])
    defaults: dict[str, Any] = {"concurrency": concurrency, "seed": seed, **job_defaults}
    if backend is not None:
        defaults["backend"] = backend
    if log is not None:
        defaults["log"] = log
    if deadline is not None:
        defaults["deadline"] = deadline
    if retry is not None:
        defaults["retry"] = attrs.asdict(retry) if isinstance(retry, RetryPolicy) else dict(retry)
    if timeouts is not None:
        defaults["timeouts"] = attrs.asdict(timeouts) if isinstance(timeouts, Timeouts) else dict(timeouts)
    if options and backend is not None:  # (checked above: options come with a backend)
        defaults[backend] = dict(options)
    if backend_settings:
        defaults["backends"] = {name: dict(s) for name, s in backend_settings.items()}
    spec = build_batch(queries, defaults)
    if resume is None:
        return spec
    if not os.path.exists(resume):  # first run of an idempotent script: start the log
        return attrs.evolve(spec, log=resume)
    planned = plan(spec, resume, retry_failed=retry_failed)
    return attrs.evolve(planned.spec, already_done=planned.already_done)


def run_batch(
    queries: Iterable[QueryLike],
    *,
    backend: str | None = None,
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
    **job_defaults: Any,
) -> BatchResult:
    """Run every query and return the batch result (starts and ends its own trio run).

    ``backend`` is required unless every query names its own (there is no silent simulator).
    Ctrl-C stops the batch as the CLI does (in-flight attempts cancelled, every job's terminal
    event and the summary logged), then raises a plain :class:`KeyboardInterrupt`. Inside a
    running event loop (asyncio, trio, a Jupyter cell) it raises :class:`RuntimeError`: use
    :func:`run_batch_async` or :func:`open_batch` there.

    ``queries`` are prompts, :class:`Query` objects or job-like mappings. ``options`` are the
    backend's per-job options; ``backend_settings`` maps backend names to batch-wide settings;
    other keywords (``model``, ``system``, ``max_tokens``, ``temperature``) are job defaults.
    ``on_event`` is called with every tagged event, on the bus, in per-job order.
    ``resume`` names a log: jobs it shows succeeded (same id and content hash) are not run again
    and this run is appended to it (a missing log is simply started). ``retry_failed`` reruns
    only the jobs whose last outcome there was a failure. Results hold the jobs run now.
    Raises :class:`~orchestrator.errors.ConfigError` for bad input, before anything runs.
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
        retry_failed=retry_failed,
    )
    subscribers: list[Subscriber] = [CallbackSubscriber(on_event)] if on_event is not None else []

    async def main(control: RunControl) -> BatchResult:
        return await execute(spec, subscribers=subscribers, keep_text=keep_text, control=control)

    return host.run_blocking(main)


async def run_batch_async(
    queries: Iterable[QueryLike],
    *,
    backend: str | None = None,
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
    progress: bool = False,
    **job_defaults: Any,
) -> BatchResult:
    """:func:`run_batch` for a running asyncio loop (a Jupyter cell included) or trio program:
    ``result = await run_batch_async(prompts, backend="local")``.

    Under asyncio the batch runs on a trio guest run on the same loop, so the loop (and the
    notebook) stays responsive. Cancelling the awaiting task stops the batch gracefully and waits
    for its terminal events before the cancellation goes on. Under asyncio in the main thread,
    Ctrl-C does what it does in :func:`run_batch`. ``progress=True`` shows live progress: in a
    notebook a display under the cell that updates in place, elsewhere lines on stderr.
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
        retry_failed=retry_failed,
    )
    subscribers: list[Subscriber] = [CallbackSubscriber(on_event)] if on_event is not None else []

    async def main(control: RunControl) -> BatchResult:
        if not progress:
            return await execute(spec, subscribers=subscribers, keep_text=keep_text, control=control)
        from orchestrator.cli.live import with_progress

        async def shown_run(shown: Sequence[Subscriber]) -> BatchResult:
            everyone = [*subscribers, *shown]
            return await execute(spec, subscribers=everyone, keep_text=keep_text, control=control)

        return await with_progress(shown_run)

    if host.running_loop_library() == "trio":
        return await main(RunControl())
    return await host.Guest().run(main)


@asynccontextmanager
async def open_batch(
    queries: Iterable[QueryLike],
    *,
    backend: str | None = None,
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
) -> AsyncIterator[BatchRun | host.GuestBatch]:
    """Run a batch in the background of an ``async with`` block, inside your trio or asyncio
    program (a Jupyter cell included)::

        async with open_batch(["a", "b"], backend="local") as batch:
            async for tagged in batch:
                print(tagged.job_id, tagged.event.kind)
        print(batch.result.summary)

    Events wait in a buffer of ``buffer`` events; a reader that falls behind slows the batch.
    Leaving the block stops delivery to the iterator and waits for the batch to finish; call
    ``batch.cancel()`` first to stop it early. Under trio, cancelling the surrounding scope tears
    it down; under asyncio (a trio guest run, see :mod:`orchestrator.run.host`) an exception or a
    cancellation in the block stops the batch gracefully and waits for it before propagating.
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
    if host.running_loop_library() == "trio":
        async with open_spec(spec, buffer=buffer, keep_text=keep_text) as run:
            yield run
    else:
        async with host.open_guest_batch(spec, buffer=buffer, keep_text=keep_text) as guest_run:
            yield guest_run
