"""One batch from start to finish: preflight, the log, the bus, the run, the summary.

Task layout (nothing outlives :func:`execute`)::

    run nursery ── bus (delivers every event to the subscribers: log, aggregation, yours)
                ├─ idle watchdog
                └─ the run's work (see :mod:`orchestrator.run.runner`)

After the work, the summary is folded from the delivered events and sent as ``batch_finished``.
:func:`open_spec` runs the same in the background of an ``async with`` block.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import attrs
import trio

from orchestrator import codec
from orchestrator._version import __version__
from orchestrator.backends import BackendKind, backend_kind
from orchestrator.backends.base import EmitBatch
from orchestrator.diagnostics import logger
from orchestrator.engines import Engine, LocalEngine
from orchestrator.errors import ConfigError, leaves
from orchestrator.events import (
    DURABLE_EVENTS,
    BatchFinished,
    BatchStarted,
    BatchSummary,
    Event,
    LimiterChanged,
    Tagged,
)
from orchestrator.record.aggregate import Aggregator, JobResult, ResultsInJobOrder
from orchestrator.record.claim import LogClaim, claim_log, job_path
from orchestrator.record.log import LogError, LogHeader, LogWriteError, LogWriter
from orchestrator.redact import batch_redactor
from orchestrator.resources import OpenFiles, fit_open_files
from orchestrator.run.bus import Barrier, Item, Subscriber, run_bus
from orchestrator.run.control import RunControl
from orchestrator.run.garbage import fewer_full_collections
from orchestrator.run.runner import Run
from orchestrator.spec import BatchSpec

CHANNEL_SIZE = 32768
# Events the bus holds before senders wait: room for what 1,000 workers send while the log fsyncs
# (a wait on a full channel costs a wake-up per event; see bus.MAX_BATCH). A few MB at most.
_log = logger("orchestrator.run.batch")


@attrs.frozen
class BatchResult:
    """What a finished batch returns: the summary and one result per job that ended, in job
    order (jobs a stop skipped included)."""

    summary: BatchSummary
    jobs: Mapping[str, JobResult]
    run_id: str
    log: str | None

    @property
    def ok(self) -> bool:
        return self.summary.ok

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per job, in job order: the results table's rows (the columns of
        :mod:`orchestrator.record.results`); ``text`` is None when run with ``keep_text=False``."""
        from orchestrator.record.results import result_row

        return [result_row(result) for result in self.jobs.values()]

    def to_pandas(self) -> Any:
        """:meth:`rows` as a pandas DataFrame (lists and tables as JSON text, as in the CSV);
        ImportError naming the install command when pandas is missing."""
        from orchestrator.record.results import to_pandas

        return to_pandas(self.rows())

    def to_polars(self) -> Any:
        """:meth:`rows` as a polars DataFrame (as :meth:`to_pandas`)."""
        from orchestrator.record.results import to_polars

        return to_polars(self.rows())


class _Aggregating:
    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        self.aggregator.apply_all(batch)


def preflight(spec: BatchSpec) -> dict[str, BackendKind]:
    """Look up every backend the batch uses and ask each whether it can run; raises ConfigError."""
    kinds = {name: backend_kind(name) for name in sorted(spec.jobs.backend_counts())}
    problems: list[str] = []
    for name, kind in kinds.items():
        # Jobs alike are checked once: plain rows of a data file are one group.
        jobs = list(spec.jobs.alike(name))
        problems.extend(kind.preflight(spec.backends.get(name) or kind.Settings(), jobs))
    if problems:
        raise ConfigError(problems)
    return kinds


def _fit_open_files(spec: BatchSpec, kinds: Mapping[str, BackendKind]) -> OpenFiles:
    """Room for the batch's attempts under the open-file limit (see :mod:`orchestrator.resources`)."""
    backends = {}
    for name, kind in kinds.items():
        settings = spec.backends.get(name) or kind.Settings()
        # A derived in-flight limit (see orchestrator.run.limits) may rise to its own ceiling.
        ceiling = (
            getattr(settings, "concurrency", None)
            or getattr(kind, "derived_concurrency_ceiling", None)
            or kind.default_concurrency
        )
        backends[name] = (ceiling, getattr(kind, "files_per_attempt", 0))
    return fit_open_files(spec.concurrency, backends)


async def execute(
    spec: BatchSpec,
    *,
    subscribers: Sequence[Subscriber] = (),
    keep_text: bool = True,
    control: RunControl | None = None,
    claim: LogClaim | None = None,
    engine: Engine | None = None,
) -> BatchResult:
    """Run the batch to the end and return its result.

    Raises :class:`ConfigError` before anything runs if a backend cannot run (preflight), or the
    log cannot be opened, is not a log, or is in use by another run. The log is claimed for the
    whole run (see :mod:`~orchestrator.record.claim`) unless the caller passes the ``claim`` it
    already holds (to read the log for a resume first); a claim passed in stays the caller's.
    A stop through ``control`` or the batch deadline still returns a result (``summary.stopped``
    says why). A log write that fails (a full disk) ends the run with :class:`LogWriteError`:
    backends clean up, and what the log holds stays valid for ``--resume``. If this task itself
    is cancelled, the run is torn down: backends clean up, but unfinished jobs get no terminal
    event. ``engine`` says where attempts run (default: in this process; see
    :mod:`orchestrator.engines`).
    """
    kinds = preflight(spec)
    files = _fit_open_files(spec, kinds)
    if files.concurrency < spec.concurrency:
        _log.warning(files.notice)
        spec = attrs.evolve(spec, concurrency=files.concurrency)
    own_claim = None
    if claim is None and spec.log is not None and spec.log != "-":
        own_claim = claim_log(spec.log, job_file=spec.source)
    try:
        with fewer_full_collections():
            return await _execute(
                spec, kinds, subscribers, keep_text, control or RunControl(), files, engine or LocalEngine()
            )
    except BaseExceptionGroup as group:
        # The bus task's failure arrives wrapped by the nurseries it crossed: give it back bare.
        failed, _ = group.split(LogWriteError)
        if failed is None:
            raise
        raise leaves(failed)[0] from None
    finally:
        if own_claim is not None:
            own_claim.release()


async def _execute(
    spec: BatchSpec,
    kinds: Mapping[str, BackendKind],
    subscribers: Sequence[Subscriber],
    keep_text: bool,
    control: RunControl,
    files: OpenFiles,
    engine: Engine,
) -> BatchResult:
    # secrets: every string a backend sends passes through this (see orchestrator.redact)
    redactor = batch_redactor(
        {name: (kind, spec.backends.get(name) or kind.Settings()) for name, kind in kinds.items()}
    )
    run_id = uuid.uuid4().hex[:12]
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    writer = LogWriter(spec.log, spec.fsync) if spec.log else None
    if writer is not None:
        header = LogHeader(
            schema=codec.LOG_SCHEMA,
            version=__version__,
            run_id=run_id,
            started_at=started_at,
            job_file=spec.source,
            jobs=len(spec.jobs),
            settings=redactor.value(_settings_for_header(spec)),
            already_done=spec.already_done,
            job_path=job_path(spec.source),
        )
        try:
            writer.open(header)
        except LogError as exc:
            raise ConfigError([f"{exc}; refusing to write into it"]) from None
        except OSError as exc:
            raise ConfigError([f"{spec.log}: cannot open log: {exc.strerror or exc}"]) from None
    aggregator = Aggregator(keep_text=keep_text)
    all_subscribers: list[Subscriber] = [
        *([writer] if writer else []),
        _Aggregating(aggregator),
        *subscribers,
    ]
    send, receive = trio.open_memory_channel[Item](CHANNEL_SIZE)
    try:
        async with AsyncExitStack() as stack:
            # The engine seam: where the attempts run (see orchestrator.engines).
            backends = await stack.enter_async_context(engine.open_backends(spec, kinds))
            ceilings: dict[str, int | None] = {}
            for name, kind in kinds.items():
                settings = spec.backends.get(name) or kind.Settings()
                ceilings[name] = getattr(settings, "concurrency", None) or kind.default_concurrency
            async with trio.open_nursery() as nursery:
                run = Run(spec, backends, ceilings, control)
                run.send = send
                run.redactor = redactor
                log = spec.log if spec.log != "-" else None
                for backend in backends.values():
                    attach = getattr(backend, "attach", None)  # see orchestrator.backends.base
                    if attach is not None:
                        attach(_emitting(run), log, run.budget.allows)
                bus_done = trio.Event()

                async def bus() -> None:
                    await run_bus(receive, all_subscribers)
                    bus_done.set()

                nursery.start_soon(bus)
                nursery.start_soon(run.watchdog.run)
                summary = await _drive(run, aggregator, control, run_id, started_at, files.notice)
                await bus_done.wait()
                nursery.cancel_scope.cancel()  # the watchdog
    finally:
        if writer is not None:
            writer.close()
    return BatchResult(
        summary=summary,
        jobs=ResultsInJobOrder(spec.jobs.ids(), aggregator),
        run_id=run_id,
        log=spec.log,
    )


async def _drive(
    run: Run,
    aggregator: Aggregator,
    control: RunControl,
    run_id: str,
    started_at: str,
    files_notice: str | None,
) -> BatchSummary:
    spec = run.spec
    async with run.send:
        await run.emit_batch(
            BatchStarted(
                run_id=run_id, jobs=len(spec.jobs), started_at=started_at, already_done=spec.already_done
            )
        )
        if files_notice is not None:  # the concurrency was lowered to fit the open-file limit
            await run.emit_batch(LimiterChanged("*", "concurrency", spec.concurrency, None, files_notice))
        for backend, ceiling in backend_ceilings(spec, run.ceilings).items():
            reason = (
                f"{backend} runs at most {ceiling} attempts at once, fewer than the batch's concurrency "
                f"{spec.concurrency} ([backends.{backend}] concurrency sets it)"
            )
            if run.gates[backend].derived is not None:
                reason = (
                    f"{backend} starts with at most {ceiling} attempts at once, fewer than the batch's "
                    f"concurrency {spec.concurrency}, and goes up to what its rate limit times the "
                    f"latency needs ([backends.{backend}] concurrency sets it)"
                )
            await run.emit_batch(LimiterChanged(backend, "concurrency", ceiling, None, reason))
        with trio.CancelScope() as stop:
            if spec.deadline is not None:
                stop.deadline = run.t0 + spec.deadline
            control._attach(stop)
            await run.work()
        stopped = control.reason or ("deadline" if stop.cancelled_caught else None) or run.capped
        if stopped is None and run.unfinished():
            stopped = run.stopped_by_halt
        if stopped is not None:
            if stopped == run.capped == "spend cap":  # the spend cap, soft or hard: no other stop
                await run.announce_answered(stopped)
            for opened in run.backends.values():
                stop_remote = getattr(opened, "stop_remote", None)  # see orchestrator.backends.base
                if stop_remote is not None:
                    await stop_remote(control.cancel_remote)
            await run.finish_leftovers(stopped)
        barrier = Barrier()
        await run.send.send(barrier)
        await barrier.reached.wait()
        ts = round(trio.current_time() - run.t0, 6)
        summary = aggregator.summary(ts, stopped=stopped)
        await run.emit_batch(BatchFinished(summary=summary), ts=ts)
    return summary


def _emitting(run: Run) -> EmitBatch:
    """How a backend sends batch-level events: a durable one (``DURABLE_EVENTS``, such as the
    intent logged before a remote batch's create call) is in the log when the call returns."""

    async def emit(event: Event) -> None:
        await run.emit_batch(event)
        if isinstance(event, DURABLE_EVENTS):
            barrier = Barrier()
            await run.send.send(barrier)
            await barrier.reached.wait()

    return emit


def backend_ceilings(spec: BatchSpec, ceilings: Mapping[str, int | None]) -> dict[str, int]:
    """The backends whose own in-flight limit holds the batch below its ``concurrency``: those
    with more jobs than that limit (said once, at the start, so a cap is never silent)."""
    jobs = spec.jobs.backend_counts()
    return {
        name: ceiling
        for name, ceiling in ceilings.items()
        if ceiling is not None and ceiling < min(spec.concurrency, jobs.get(name, 0))
    }


def _settings_for_header(spec: BatchSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "concurrency": spec.concurrency,
        "deadline": spec.deadline,
        "seed": spec.seed,
        "fsync": spec.fsync,
        "backends": {name: codec.to_jsonable(s) for name, s in spec.backends.items()},
    }


@attrs.define(eq=False)
class BatchRun:
    """A batch running inside :func:`open_batch`: iterate it for tagged events as they happen.

    ``result`` is set once the ``async with`` block has exited and the batch has finished.
    """

    _receive: trio.MemoryReceiveChannel[Tagged]
    control: RunControl = attrs.Factory(RunControl)
    result: BatchResult | None = None
    _finished: trio.Event = attrs.Factory(trio.Event)

    def __aiter__(self) -> AsyncIterator[Tagged]:
        return self._receive.__aiter__()

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the batch gracefully (see :class:`RunControl`)."""
        self.control.cancel(reason)

    async def wait(self) -> BatchResult:
        """Stop listening to events and wait for the batch to finish."""
        self._receive.close()
        await self._finished.wait()
        assert self.result is not None
        return self.result


@asynccontextmanager
async def open_spec(
    spec: BatchSpec,
    *,
    buffer: int = CHANNEL_SIZE,
    keep_text: bool = True,
    subscribers: Sequence[Subscriber] = (),
    claim: LogClaim | None = None,
) -> AsyncIterator[BatchRun]:
    """Run ``spec`` in the background of the ``async with`` block; see :func:`open_batch`.
    ``claim`` is the log's claim when the caller already holds it (it stays the caller's)."""
    from orchestrator.run.bus import ChannelSubscriber

    send, receive = trio.open_memory_channel[Tagged](buffer)
    run = BatchRun(receive)
    preflight(spec)  # bad input raises here, before the block runs
    own_claim = None
    if claim is None and spec.log is not None and spec.log != "-":
        own_claim = claim_log(spec.log, job_file=spec.source)  # so does a log in use

    async def execute_and_close() -> None:
        async with send:
            run.result = await execute(
                spec,
                subscribers=[*subscribers, ChannelSubscriber(send)],
                keep_text=keep_text,
                control=run.control,
                claim=claim or own_claim,
            )
            run._finished.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(execute_and_close)
            try:
                yield run
            finally:
                receive.close()
    finally:
        if own_claim is not None:
            own_claim.release()
