"""Running a batch's jobs: the workers, the attempts, the retries, the leftovers after a stop.

Task layout of one run's work (inside :func:`orchestrator.run.batch.execute`, which owns the bus,
the log and the summary; nothing outlives it)::

    stop scope (Ctrl-C, deadline) ── work nursery ── backoff timer
                                                  ├─ announcer (job_queued, in order)
                                                  └─ ``concurrency`` workers

Each worker takes the next job from a :class:`~orchestrator.run.schedule.JobQueue`, runs one attempt
(under the backend's own limiter, if it has one) and either ends the job or puts it back with the
time its backoff ends; a job waiting out a backoff holds no worker. So at most ``concurrency``
attempts are ever in flight, and a 100,000-job batch has only ``concurrency`` job tasks.

Every job ends exactly once: a worker emits ``job_succeeded`` or ``job_failed``; after the work
nursery has closed, :meth:`Run.finish_leftovers` emits ``job_cancelled`` for every started job
that has no end, and one batch-level ``jobs_skipped`` naming (by position) every job that never
started.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import attrs
import trio

from orchestrator.backends import Backend
from orchestrator.backends.request import estimated_input_tokens
from orchestrator.diagnostics import logger
from orchestrator.events import (
    AttemptStarted,
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
from orchestrator.redact import Redactor
from orchestrator.run.bus import Item
from orchestrator.run.control import RunControl
from orchestrator.run.halt import HaltWatch
from orchestrator.run.job import (
    OBSERVED,
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

_ANNOUNCE_CHUNK = 256  # jobs announced between two checkpoints, once the first workers have theirs
_TERMINAL_GRACE = 5.0  # seconds a job's terminal event may wait for the bus during a stop
_log = logger("orchestrator.run.runner")
# Tagged(...) goes through the named tuple's Python-level __new__; this is one C call.
_tagged = functools.partial(tuple.__new__, Tagged)


@attrs.define(slots=True, eq=False)
class _Job(JobState):
    """A job's state (:class:`~orchestrator.run.job.JobState`) bound to the run that sends its events."""

    run: Run = attrs.field(kw_only=True)

    async def emit(self, event: Event, *, terminal: bool = False) -> None:
        """Tag and send one event. Not to be called from two tasks at once (seq order).

        While the bus has room this returns without yielding to the scheduler: a checkpoint per
        event would cap the whole batch near 100k events/s. Only a full channel (a slow
        consumer) makes it wait, and then the idle watchdog is paused, since the stream is not
        the one stalling. A ``terminal`` event waits shielded from a stop (for at most
        ``_TERMINAL_GRACE`` seconds; the bus still runs during a stop, so the wait is brief): a
        stop arriving then must not turn a finished job into a cancelled one, which would be paid
        for again on resume.
        """
        # On the path of every event: a handful of attribute reads and one tuple, nothing more.
        run = self.run
        now = run.now()
        tagged = _tagged((self.spec.id, self.attempt, self.seq, round(now - run.t0, 6), event, None))
        watch = self.watch
        try:
            run.send.send_nowait(tagged)
        except trio.WouldBlock:
            if watch is not None:
                watch.paused = True
            if terminal:
                with trio.CancelScope(shield=True, deadline=now + _TERMINAL_GRACE):
                    await run.send.send(tagged)
            else:
                await run.send.send(tagged)
            now = run.now()
        self.seq += 1
        if watch is not None:
            watch.last = now  # Watch.touch, inlined
            watch.paused = False
        kind = type(event)
        if kind in OBSERVED:
            if kind is RateLimitInfo:
                await run.gates[self.spec.backend].observe(self.spec.model, event)  # type: ignore[arg-type]
            else:
                self.observe(event)

    async def emit_from_backend(self, event: StreamEvent) -> None:
        """The ``emit`` a backend gets: :meth:`emit`, with the batch's secrets hidden first."""
        await self.emit(self.run.redactor.value(event))  # secrets: see orchestrator.redact


class Run:
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
            spec = job.spec
            estimator = self.estimators.get(spec.backend)
            if estimator is not None:
                tokens, cost = estimator(spec)
                job.estimate = tokens, cost or 0.0
            else:
                job.estimate = estimated_input_tokens(spec) + (spec.max_tokens or 1024), 0.0
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
                await job.emit(terminal, terminal=True)  # shielded from a stop
                job.end()
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
        step = next_step(job, failure, now=self.now(), seed=self.spec.seed)
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
        job.begin_attempt(self.now())
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
        start = self.now()
        deadline = None if timeouts.attempt is None or waits else start + timeouts.attempt
        if job.deadline is not None:
            deadline = job.deadline if deadline is None else min(deadline, job.deadline)
        watch: Watch | None = None
        with trio.CancelScope() as scope:
            if idle is not None or deadline is not None:
                watch = job.watch = self.watchdog.watch(scope, idle, deadline, now=start)
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
