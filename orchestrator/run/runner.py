"""Running a batch: the nursery, the workers, the attempts, the retries.

Task layout of one run (nothing outlives :func:`execute`)::

    run nursery ── bus (delivers every event to the subscribers)
                ├─ idle watchdog
                └─ stop scope (Ctrl-C, deadline) ── work nursery ── backoff timer
                                                                 ├─ announcer (job_queued, in order)
                                                                 └─ ``concurrency`` workers

Each worker takes the next job from a :class:`~orchestrator.run.schedule.JobQueue`, runs one attempt
(under the backend's own limiter, if it has one) and either ends the job or puts it back with the
time its backoff ends; a job waiting out a backoff holds no worker. So at most ``concurrency``
attempts are ever in flight, and a 100,000-job batch has only ``concurrency`` job tasks.

Every job ends exactly once: a worker emits ``job_succeeded`` or ``job_failed``; after the work
nursery has closed, the runner emits ``job_cancelled`` for every started job that has no end,
and one batch-level ``jobs_skipped`` naming (by position) every job that never started. Then
the summary is folded from the delivered events and sent as ``batch_finished``.
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
from orchestrator.backends import Backend, BackendKind, backend_kind
from orchestrator.backends.request import attempt_estimate
from orchestrator.diagnostics import logger
from orchestrator.engines import Engine, LocalEngine
from orchestrator.errors import ConfigError, leaves
from orchestrator.events import (
    AttemptStarted,
    BatchFinished,
    BatchStarted,
    BatchSummary,
    Event,
    JobInput,
    JobQueued,
    JobSkipped,
    JobsSkipped,
    LimiterChanged,
    RateLimitInfo,
    StreamEvent,
    Tagged,
    TerminalEvent,
)
from orchestrator.record.aggregate import Aggregator, JobResult, ResultsInJobOrder
from orchestrator.record.claim import LogClaim, claim_log, job_path
from orchestrator.record.log import LogError, LogHeader, LogWriteError, LogWriter
from orchestrator.redact import Redactor, batch_redactor
from orchestrator.resources import OpenFiles, fit_open_files
from orchestrator.run.bus import Barrier, Item, Subscriber, run_bus
from orchestrator.run.halt import HaltWatch
from orchestrator.run.job import (
    Failure,
    JobState,
    Retry,
    attempt_failure,
    failure_from,
    internal_failure,
    leftover_terminal,
    next_step,
)
from orchestrator.run.limits import Budget, Gate
from orchestrator.run.schedule import JobQueue
from orchestrator.run.watchdog import IdleWatchdog, Watch
from orchestrator.spec import BackendLimits, BatchSpec, JobSpec

CHANNEL_SIZE = 8192
_ANNOUNCE_CHUNK = 256  # jobs announced between two checkpoints, once the first workers have theirs
_TERMINAL_GRACE = 5.0  # seconds a job's terminal event may wait for the bus during a stop
_log = logger("orchestrator.run.runner")


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


class RunControl:
    """A handle to stop a running batch gracefully: no new attempts start, running ones are
    cancelled (backends clean up), every unfinished job gets its terminal event, the log is
    flushed and the summary is computed. Safe to call at any time, from the run's trio thread."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._scope: trio.CancelScope | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        if self.reason is None:
            self.reason = reason
        if self._scope is not None:
            self._scope.cancel()

    def _attach(self, scope: trio.CancelScope) -> None:
        self._scope = scope
        if self.reason is not None:
            scope.cancel()


@attrs.define(slots=True, eq=False)
class _Job(JobState):
    """A job's state (:class:`~orchestrator.run.job.JobState`) bound to the run that sends its events."""

    run: _Run = attrs.field(kw_only=True)

    async def emit(self, event: Event) -> None:
        """Tag and send one event. Not to be called from two tasks at once (seq order).

        While the bus has room this returns without yielding to the scheduler: a checkpoint per
        event would cap the whole batch near 100k events/s. Only a full channel (a slow
        consumer) makes it wait, and then the idle watchdog is paused, since the stream is not
        the one stalling.
        """
        run = self.run
        now = run.now()
        tagged = Tagged(self.spec.id, self.attempt, self.seq, round(now - run.t0, 6), event)
        try:
            run.send.send_nowait(tagged)
        except trio.WouldBlock:
            watch = self.watch
            if watch is not None:
                watch.paused = True
            await run.send.send(tagged)
            now = run.now()
        self.seq += 1
        if self.watch is not None:
            self.watch.touch(now)
        if type(event) is RateLimitInfo:
            await run.gates[self.spec.backend].observe(self.spec.model, event)
        else:
            self.observe(event)

    async def emit_from_backend(self, event: StreamEvent) -> None:
        """The ``emit`` a backend gets: :meth:`emit`, with the batch's secrets hidden first."""
        await self.emit(self.run.redactor.value(event))  # secrets: see orchestrator.redact


class _Run:
    """One execution of a :class:`BatchSpec`."""

    def __init__(
        self,
        spec: BatchSpec,
        backends: Mapping[str, Backend],
        ceilings: Mapping[str, int | None],
        control: RunControl,
    ) -> None:
        self.spec = spec
        self.backends = backends
        self.control = control
        self.ceilings = {name: self._ceiling(spec, name, n) for name, n in ceilings.items()}
        # A backend may estimate an attempt's tokens and cost (for pacing and the spend cap).
        self.estimators = {name: getattr(backend, "estimate", None) for name, backend in backends.items()}
        self.gates = {
            name: Gate(
                name,
                spec.limits.get(name, BackendLimits()),
                self.ceilings[name],
                self.notify,
                on_pause=lambda until: self.queue.wake_at(until),
                refund=getattr(backends[name], "refunds_unused_tokens", True),
            )
            for name in ceilings
        }
        self.budget = Budget(spec.max_cost_usd)
        self.capped: str | None = None
        self.halt = HaltWatch(spec.halt)
        self.send: trio.MemorySendChannel[Item]
        self.redactor = Redactor()  # the batch's, set by execute (see orchestrator.redact)
        # The clock's own method: trio.current_time() looks the clock up on every call.
        self.now = trio.lowlevel.current_clock().current_time
        self.t0 = self.now()
        self.seq = 0
        self.watchdog = IdleWatchdog()
        self.jobs = [_Job(spec=job, run=self) for job in spec.jobs]
        self.queue: JobQueue[_Job] = JobQueue(
            (),
            lane_of=lambda job: job.spec.backend,
            room=lambda lane: self.gates[str(lane)].has_room(),
            expected=len(self.jobs),
        )

    @staticmethod
    def _ceiling(spec: BatchSpec, name: str, configured: int | None) -> int | None:
        # Adaptive concurrency needs a limit to adapt; the global one is the natural ceiling.
        if configured is None and spec.limits.get(name, BackendLimits()).adaptive:
            return spec.concurrency
        return configured

    async def emit_batch(self, event: Event, ts: float | None = None) -> None:
        """Send a batch-level event. Its seq is taken before waiting, so batch events sent from
        several tasks stay distinct."""
        now = round(trio.current_time() - self.t0, 6) if ts is None else ts
        seq = self.seq
        self.seq += 1
        await self.send.send(Tagged(None, 0, seq, now, event))

    async def notify(self, change: LimiterChanged) -> None:
        until = None if change.until_s is None else change.until_s - self.t0
        await self.emit_batch(attrs.evolve(change, until_s=until))

    def estimate(self, job: _Job) -> tuple[int, float]:
        """Tokens and cost to reserve for one attempt (the backend's estimate when it has one).
        Worked out once per job: it depends on the job's spec alone."""
        if job.estimate is None:
            job.estimate = attempt_estimate(self.estimators.get(job.spec.backend), job.spec)
        return job.estimate

    async def reach_spend_cap(self, job: _Job) -> None:
        """No new job starts from now on; with ``hard_cap`` running ones are cancelled too."""
        self.capped = "spend cap"
        cap = self.spec.max_cost_usd
        reason = f"spent ${self.budget.spent:.4f} + ${self.budget.reserved:.4f} running; cap ${cap:g}"
        await self.emit_batch(LimiterChanged("*", "spend_cap", cap, None, reason))
        self.queue.drop_new(also_taken=1)
        if self.spec.hard_cap:
            self.control.cancel("spend cap")

    async def halt_backend(self, backend: str, reason: str) -> None:
        """The backend's jobs cannot succeed: none of its new jobs starts from now on."""
        _log.warning("backend halted", backend=backend, reason=reason)
        await self.emit_batch(LimiterChanged(backend, "halted", 0, None, reason))
        self.queue.close_lane(backend)

    @property
    def stopped_by_halt(self) -> str | None:
        """The halt reason, if a halt left jobs unstarted (the first backend that halted)."""
        return next(iter(self.halt.halted.values()), None)

    async def work(self) -> None:
        """Run every job to its end with ``concurrency`` workers; see the module docstring."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            nursery.start_soon(self.announce)
            for _ in range(min(self.spec.concurrency, len(self.jobs))):
                nursery.start_soon(self.worker)

    async def announce(self) -> None:
        """Send each job's ``job_queued`` and then hand the job to the queue, in job order.

        The first ``concurrency`` jobs go at once, the rest in chunks with a checkpoint between
        them: the first attempts start right away rather than after every announcement of a
        100k-job batch, and the remaining announcements run while those attempts wait on their
        backends. A job is never taken before it is announced, so its events stay in order.
        Jobs left unannounced by a stop or the spend cap never started: :meth:`finish_leftovers`
        ends them in its ``jobs_skipped`` without announcing them.
        """
        jobs = self.jobs
        start, size = 0, max(self.spec.concurrency, 1)
        while start < len(jobs) and self.queue.accepting:
            chunk = jobs[start : start + size]
            for job in chunk:
                await self.announce_one(job)
            self.queue.add(chunk)
            start += size
            size = _ANNOUNCE_CHUNK
            await trio.lowlevel.checkpoint()

    async def announce_one(self, job: _Job) -> None:
        """Send the job's ``job_queued`` and its ``job_input``. Cancelled while the bus is full
        before ``job_queued`` is sent, the job stays unannounced (and unstarted:
        ``finish_leftovers`` skips it by position); cancelled after, its ``job_input`` may be
        missing from the log."""
        spec = job.spec
        await job.emit(JobQueued(backend=spec.backend, model=spec.model, content_hash=spec.content_hash))
        job.queued = True
        described = job_input(spec, log_inputs=self.spec.log_inputs)
        if described is not None:
            await job.emit(described)

    async def worker(self) -> None:
        while (job := await self.queue.take()) is not None:
            terminal = await self.step(job)
            if terminal is not None:
                # A stop arriving now must not turn a finished job into a cancelled one (it
                # would be paid for again on resume). Only a full bus can make the send wait;
                # then shield it (the bus still runs during a stop, so the wait is brief).
                stats = self.send.statistics()
                if stats.current_buffer_used < stats.max_buffer_size:
                    await job.emit(terminal)
                else:
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + _TERMINAL_GRACE):
                        await job.emit(terminal)
                job.done = True
                self.queue.finished()
                halted = self.halt.record(job.spec.backend, terminal)
                if halted is not None:
                    await self.halt_backend(job.spec.backend, halted)

    async def step(self, job: _Job) -> TerminalEvent | None:
        """Run the job's next attempt. Returns its terminal event, or None when it will retry
        (it is then back in the queue with the time its backoff ends) or will not run (cap)."""
        spec = job.spec
        if not job.admitted:
            # Check and reserve in one step, with no await between: workers waiting at a
            # backend's gate must not all pass the cap on the same budget.
            cost = self.estimate(job)[1]
            if self.capped is not None or not self.budget.allows(cost):
                if self.capped is None:
                    await self.reach_spend_cap(job)
                else:
                    self.queue.drop_new(also_taken=1)
                return None
            self.budget.reserve(cost)
            job.admit(cost)
        elif job.timed_out(trio.current_time()):
            return job.timeout_failure()
        failure = await self.attempt(job)
        if failure is not None:
            _log.debug(
                "attempt failed", job=spec.id, attempt=job.attempt, kind=failure.kind, error=failure.message
            )
        step = next_step(job, failure, now=trio.current_time(), seed=self.spec.seed)
        if isinstance(step, Retry):
            await job.emit(step.event)
            self.queue.later(job, step.due, urgent=step.urgent)
            return None
        return step

    async def attempt(self, job: _Job) -> Failure | None:
        """One attempt through its backend's gate (in-flight limit, rate limits, pauses), under
        the attempt and job deadlines and the idle watchdog.

        The job counts as started, and its job timeout starts, only once the gate lets it
        through: waiting for a slot is not running. Cancelled at the gate, it has not started.
        """
        spec = job.spec
        gate = self.gates[spec.backend]
        tokens, cost = self.estimate(job)
        if job.reserved is None:
            self.budget.reserve(cost)
            job.reserved = cost
        try:
            ticket = await gate.enter(tokens, spec.model)
        except BaseException:
            self._settle(job, None)
            raise
        job.begin_attempt(trio.current_time())
        try:
            failure = await self._stream(job)
        finally:
            spent = job.attempt_spent()  # what the summary charges this attempt, too
            ticket.used = spent.tokens.total
            gate.leave(ticket)
            # An unknown cost still counts what is known of it: a killed attempt was paid for.
            self._settle(job, spent.cost_usd if spent.cost_usd is not None else spent.at_least_usd)
        if failure is None:
            await gate.succeeded()
        else:
            await gate.failed(ticket, failure.kind, failure.retry_after, spec.retry.max_retry_after)
        if gate.slots is not None:
            self.queue.wake()  # a slot of this backend is free again (without a slot limit,
            # workers wait only for jobs: this one takes the next itself, so waking another is waste)
        return failure

    def _settle(self, job: _Job, cost: float | None) -> None:
        if job.reserved is not None:
            self.budget.settle(job.reserved, cost)
            job.reserved = None

    async def _stream(self, job: _Job) -> Failure | None:
        """Run one attempt's stream under the idle watch and the attempt and job deadlines."""
        spec = job.spec
        timeouts = spec.timeouts
        backend = self.backends[spec.backend]
        waits = getattr(backend, "waits_for_results", False)  # a batch API: hours of silence are normal
        idle = None if waits else timeouts.idle
        await job.emit(AttemptStarted(backend=spec.backend))
        start = trio.current_time()
        deadline = None if timeouts.attempt is None or waits else start + timeouts.attempt
        if job.deadline is not None:
            deadline = job.deadline if deadline is None else min(deadline, job.deadline)
        watch: Watch | None = None
        with trio.CancelScope() as scope:
            if idle is not None or deadline is not None:
                watch = job.watch = self.watchdog.watch(scope, idle, deadline)
            try:
                await backend.stream(job.request(), job.attempt, job.emit_from_backend)
            except Exception as exc:
                failure = failure_from(exc)
                if failure is None:
                    # A bug, not an outcome: the job fails, and the traceback goes to the diagnostics.
                    _log.warning("backend raised an unexpected exception", exc_info=exc)
                    failure = internal_failure(exc)
                return self.redactor.value(failure)  # secrets: see orchestrator.redact
            finally:
                if watch is not None:
                    self.watchdog.release(watch)
                job.watch = None
        if scope.cancelled_caught and watch is not None:
            return attempt_failure(job, timeouts, fired=watch.fired, attempt_deadline=watch.deadline)
        failure = attempt_failure(job, timeouts, fired=None, attempt_deadline=0.0)
        if job.parsed is not None:
            await job.emit(job.parsed)
        return failure

    async def finish_leftovers(self, reason: str) -> None:
        """End every job that has no terminal event, now that no job task runs: a started job
        gets its own ``job_cancelled``; all jobs that never started end together in one
        ``jobs_skipped`` (positions in job order), so a stop costs the same at any batch size."""
        ranges: list[tuple[int, int]] = []
        start = -1
        count = 0
        # Jobs are announced in order, and only announced jobs can have started: the jobs past
        # the first unannounced one are one range, found without visiting each.
        announced = next((i for i, job in enumerate(self.jobs) if not job.queued), len(self.jobs))
        for position, job in enumerate(self.jobs[:announced]):
            ending = None if job.done else leftover_terminal(job, reason)
            job.done = True
            if isinstance(ending, JobSkipped):
                if start < 0:
                    start = position
                count += 1
                continue
            if start >= 0:
                ranges.append((start, position))
                start = -1
            if ending is not None:
                await job.emit(ending)
        if announced < len(self.jobs):
            start = announced if start < 0 else start
            count += len(self.jobs) - announced
        if start >= 0:
            ranges.append((start, len(self.jobs)))
        if count:
            await self.emit_batch(JobsSkipped(reason=reason, count=count, ranges=tuple(ranges)))


def job_input(spec: JobSpec, *, log_inputs: bool) -> JobInput | None:
    """The ``job_input`` event of a job: its rendered request (unless ``log_inputs`` is off),
    its row and its metadata; None when there is nothing to say."""
    # The log writes plain dicts; a job without a row shares one read-only empty mapping.
    row, metadata = dict(spec.row), dict(spec.metadata)
    if not log_inputs:
        return JobInput(row=row, metadata=metadata) if row or metadata else None
    return JobInput(
        row=row, metadata=metadata, system=spec.system, prompt=spec.prompt, messages=spec.messages
    )


class _Aggregating:
    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        self.aggregator.apply_all(batch)


def preflight(spec: BatchSpec) -> dict[str, BackendKind]:
    """Look up every backend the batch uses and ask each whether it can run; raises ConfigError."""
    kinds = {name: backend_kind(name) for name in sorted({job.backend for job in spec.jobs})}
    problems: list[str] = []
    for name, kind in kinds.items():
        jobs = [job for job in spec.jobs if job.backend == name]
        problems.extend(kind.preflight(spec.backends.get(name) or kind.Settings(), jobs))
    if problems:
        raise ConfigError(problems)
    return kinds


def _fit_open_files(spec: BatchSpec, kinds: Mapping[str, BackendKind]) -> OpenFiles:
    """Room for the batch's attempts under the open-file limit (see :mod:`orchestrator.resources`)."""
    backends = {}
    for name, kind in kinds.items():
        settings = spec.backends.get(name) or kind.Settings()
        ceiling = getattr(settings, "concurrency", None) or kind.default_concurrency
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
                run = _Run(spec, backends, ceilings, control)
                run.send = send
                run.redactor = redactor
                log = spec.log if spec.log != "-" else None
                for backend in backends.values():
                    attach = getattr(backend, "attach", None)  # see orchestrator.backends.base
                    if attach is not None:
                        attach(run.emit_batch, log)
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
        jobs=ResultsInJobOrder([job.id for job in spec.jobs], aggregator),
        run_id=run_id,
        log=spec.log,
    )


async def _drive(
    run: _Run,
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
            await run.emit_batch(LimiterChanged(backend, "concurrency", ceiling, None, reason))
        with trio.CancelScope() as stop:
            if spec.deadline is not None:
                stop.deadline = run.t0 + spec.deadline
            control._attach(stop)
            await run.work()
        stopped = control.reason or ("deadline" if stop.cancelled_caught else None) or run.capped
        if stopped is None and any(not job.done for job in run.jobs):
            stopped = run.stopped_by_halt
        if stopped is not None:
            await run.finish_leftovers(stopped)
        barrier = Barrier()
        await run.send.send(barrier)
        await barrier.reached.wait()
        ts = round(trio.current_time() - run.t0, 6)
        summary = aggregator.summary(ts, stopped=stopped)
        await run.emit_batch(BatchFinished(summary=summary), ts=ts)
    return summary


def backend_ceilings(spec: BatchSpec, ceilings: Mapping[str, int | None]) -> dict[str, int]:
    """The backends whose own in-flight limit holds the batch below its ``concurrency``: those
    with more jobs than that limit (said once, at the start, so a cap is never silent)."""
    jobs: dict[str, int] = {}
    for job in spec.jobs:
        jobs[job.backend] = jobs.get(job.backend, 0) + 1
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
