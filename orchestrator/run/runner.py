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

A job whose request is identical to that of a job announced before it (see
:mod:`orchestrator.run.dedupe`) is not queued: :meth:`Run.announce_one` makes it a follower, and it
ends with its leader's terminal event, sent by the leader's worker right after the leader's own
(:meth:`Run.end_followers`), or by the announcer when the leader had ended already.

Every job ends exactly once: a worker emits ``job_succeeded`` or ``job_failed``; after the work
nursery has closed, :meth:`Run.finish_leftovers` emits ``job_cancelled`` for every started job
that has no end, and one batch-level ``jobs_skipped`` naming (by position) every job that never
started.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import trio

from orchestrator.backends import Backend
from orchestrator.backends.request import attempt_estimate
from orchestrator.diagnostics import logger
from orchestrator.events import (
    AttemptStarted,
    Event,
    JobInput,
    JobQueued,
    JobSkipped,
    JobsSkipped,
    LimiterChanged,
    Tagged,
    TerminalEvent,
)
from orchestrator.redact import Redactor
from orchestrator.run.bus import Item
from orchestrator.run.control import RunControl
from orchestrator.run.dedupe import Dedupe
from orchestrator.run.halt import HaltWatch
from orchestrator.run.job import (
    Failure,
    Retry,
    attempt_failure,
    failure_from,
    internal_failure,
    leftover_terminal,
    next_step,
)
from orchestrator.run.limits import Budget, Gate
from orchestrator.run.live import LiveJob, batch_time
from orchestrator.run.schedule import JobQueue
from orchestrator.run.watchdog import IdleWatchdog, Watch
from orchestrator.spec import BackendLimits, BatchSpec, JobSpec

_ANNOUNCE_CHUNK = 256  # jobs announced between two checkpoints, once the first workers have theirs
# (at least: twice the concurrency, since in one turn of the scheduler every worker may take a job)
ANNOUNCE_AHEAD = 8192  # announced jobs that may wait for a worker (at least; see Run.announce)
_TERMINAL_GRACE = 5.0  # seconds a job's terminal event may wait for the bus during a stop
_log = logger("orchestrator.run.runner")


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
        # A batch API's attempt waits hours in silence: no idle timeout, no attempt timeout.
        self.waits = {
            name: getattr(backend, "waits_for_results", False) for name, backend in backends.items()
        }
        # Each attempt's first event: a frozen value, one per backend, shared by its attempts.
        self.attempt_started = {name: AttemptStarted(backend=name) for name in backends}
        self.gates = {
            name: Gate(
                name,
                spec.limits.get(name, BackendLimits()),
                self.ceilings[name],
                self.notify,
                on_pause=lambda until: self.queue.wake_at(until),
                refund=getattr(backends[name], "refunds_unused_tokens", True),
                probe=getattr(backends[name], "announces_limits", False),
                derive_up_to=_derive_up_to(spec, backends[name]),
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
        self.dedupe: Dedupe[LiveJob] = Dedupe(spec.dedupe)
        # Per-job state is made as each job is announced, and let go once it has ended: a
        # million-job batch holds the state (and the resolved JobSpec) of a window of jobs only.
        self.live: dict[int, LiveJob] = {}  # position -> job, announced and (mostly) not ended
        self.announced = 0  # jobs whose job_queued is sent: the first ``announced`` positions
        self._pruned_at = 0
        self.queue: JobQueue[LiveJob] = JobQueue(
            (),
            lane_of=lambda job: job.spec.backend,
            room=lambda lane: self.gates[str(lane)].has_room(),
            expected=len(spec.jobs),
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
        now = batch_time(trio.current_time() - self.t0) if ts is None else ts
        seq = self.seq
        self.seq += 1
        await self.send.send(Tagged(None, 0, seq, now, event))

    async def notify(self, change: LimiterChanged) -> None:
        until = None if change.until_s is None else change.until_s - self.t0
        await self.emit_batch(attrs.evolve(change, until_s=until))

    def estimate(self, job: LiveJob) -> tuple[int, float]:
        """Tokens and cost to reserve for one attempt (the backend's estimate when it has one).
        Worked out once per job: it depends on the job's spec alone."""
        if job.estimate is None:
            job.estimate = attempt_estimate(self.estimators.get(job.spec.backend), job.spec)
        return job.estimate

    async def reach_spend_cap(self, job: LiveJob) -> None:
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
            for _ in range(min(self.spec.concurrency, len(self.spec.jobs))):
                nursery.start_soon(self.worker)

    async def announce(self) -> None:
        """Send each job's ``job_queued`` and then hand the job to the queue, in job order.

        The first ``concurrency`` jobs go at once, the rest in chunks (twice the concurrency, so
        workers that each take a job per turn do not run dry) with a checkpoint between them:
        the first attempts start right away rather than after every announcement of a 100k-job
        batch, and the remaining announcements run while those attempts wait on their
        backends. The announcer keeps at most :data:`ANNOUNCE_AHEAD` (or ``4 * concurrency``)
        announced jobs waiting for a worker and then waits for room: jobs are resolved from
        the spec (see :mod:`orchestrator.jobs`) only as the batch comes to them. A job is never
        taken before it is announced, so its events stay in order. Jobs left unannounced by a
        stop or the spend cap never started: :meth:`finish_leftovers` ends them in its
        ``jobs_skipped`` without announcing them.
        """
        jobs = self.spec.jobs
        ahead = max(ANNOUNCE_AHEAD, 4 * self.spec.concurrency)
        start, size = 0, max(self.spec.concurrency, 1)
        while start < len(jobs) and self.queue.accepting:
            chunk = [LiveJob(spec=spec, run=self) for spec in jobs[start : start + size]]
            runs = []
            for position, job in enumerate(chunk, start):
                runs_itself = await self.announce_one(job)
                self.live[position] = job
                self.announced = position + 1
                if runs_itself:
                    runs.append(job)
            if len(runs) < len(chunk):
                self.queue.not_queued(len(chunk) - len(runs))
            self.queue.add(runs)
            start += size
            size = max(_ANNOUNCE_CHUNK, 2 * self.spec.concurrency)
            self._prune()
            await trio.lowlevel.checkpoint()
            await self.queue.wait_for_room(ahead)

    async def announce_answered(self, reason: str) -> None:
        """After a stop by the spend cap (no job task runs any more): announce, in order, the
        unannounced jobs up to the last one whose identical request a leader has answered. Such
        a follower ends at once with that outcome (it costs nothing: see
        :mod:`orchestrator.run.dedupe`); a job on the way that would run is skipped at once
        (``reason``); the jobs after the last follower stay unannounced, for
        :meth:`finish_leftovers`. Cancelled, the jobs not announced yet stay so."""
        jobs, start = self.spec.jobs, self.announced
        for position in range(start, await self._answered_until(start)):
            job = LiveJob(spec=jobs[position], run=self)
            runs_itself = await self.announce_one(job)
            self.live[position] = job
            self.announced = position + 1
            if runs_itself:
                await self.send_end(job, JobSkipped(reason=reason))
            if position % _ANNOUNCE_CHUNK == 0:
                self._prune()
                await trio.lowlevel.checkpoint()

    async def _answered_until(self, start: int) -> int:
        """One past the last job from ``start`` whose identical request a leader has answered
        (see :meth:`announce_answered`); ``start`` if none."""
        dedupe, until = self.dedupe, start
        if not dedupe.answered_any():
            return start
        for position, content_hash in enumerate(self.spec.jobs.content_hashes(start), start):
            if dedupe.answered(content_hash):
                until = position + 1
            if position % _ANNOUNCE_CHUNK == 0:
                await trio.lowlevel.checkpoint()
        return until

    def _prune(self) -> None:
        """Let go of ended jobs (amortised: when the live jobs have doubled since last time)."""
        if len(self.live) >= 2 * max(self._pruned_at, _ANNOUNCE_CHUNK):
            self.live = {position: job for position, job in self.live.items() if not job.done}
            self._pruned_at = len(self.live)

    def unfinished(self) -> bool:
        """Whether any job has not ended (or not even been announced)."""
        return self.announced < len(self.spec.jobs) or any(not job.done for job in self.live.values())

    async def announce_one(self, job: LiveJob) -> bool:
        """Send the job's ``job_queued`` and its ``job_input``; True when the job is to run,
        False when an identical job announced before it sends its request (it then follows that
        leader, see :mod:`orchestrator.run.dedupe`, and may have ended already). Cancelled while
        the bus is full before ``job_queued`` is sent, the job stays unannounced (and
        unstarted: ``finish_leftovers`` skips it by position); cancelled after, its
        ``job_input`` may be missing from the log."""
        spec = job.spec
        queued = JobQueued(backend=spec.backend, model=spec.model, content_hash=spec.content_hash)
        # Not a kind the job's state looks at: emit_nowait is all of emit (without a coroutine)
        # unless the bus is full, when it sends nothing and emit waits for room.
        if not job.emit_nowait(queued):
            await job.emit(queued)
        job.queued = True
        described = job_input(spec, log_inputs=self.spec.log_inputs)
        if described is not None:
            await job.emit(described)
        follow = self.dedupe.announce(job, spec.id, spec.content_hash)
        if follow is None:
            return True
        await job.emit(follow.event)
        job.following = True
        if follow.ended is not None:
            await self.end_follower(job, follow.ended)
        return False

    async def end_followers(self, waiting: Sequence[LiveJob], shared: TerminalEvent) -> None:
        """A leader has ended with ``shared``: end the followers that waited on it with that
        event, each as the leader's own end is sent (:meth:`send_end`: a stop must not turn a
        shared outcome into a skip, the followers would be paid for on resume). A follower
        whose ``job_deduplicated`` a stop kept from being sent is left unended (a stop then
        skips it): its end alone would read as a job that ended on its own."""
        for follower in waiting:
            if follower.following:
                await self.end_follower(follower, shared)

    async def end_follower(self, follower: LiveJob, shared: TerminalEvent) -> None:
        """End a follower with its leader's terminal event (readers copy the leader's outcome)."""
        await self.send_end(follower, shared)

    async def send_end(self, job: LiveJob, terminal: TerminalEvent) -> None:
        """Send the job's terminal event and mark it done.

        A stop arriving now must not turn a finished job into a cancelled one (it would be paid
        for again on resume). Only a full bus can make the send wait; then it is shielded, for
        at most the terminal grace. A bus still full after that (a slow disk under the log)
        is waited for unshielded: with no stop the end still arrives; a stop then raises
        Cancelled and leaves the job unended, for :meth:`finish_leftovers` to end.
        """
        if job.emit_nowait(terminal):  # the bus had room: sent without a checkpoint, so no stop came between
            job.end()
            return
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _TERMINAL_GRACE):
            await job.emit(terminal)
            job.end()
        if not job.done:
            await job.emit(terminal)
            job.end()

    async def worker(self) -> None:
        """Take jobs and run their steps until none is left.

        The attempts run under one cancel scope per worker (a scope per attempt cost a tenth of
        the CPU of a short job), which only the idle watchdog cancels, and only while one of
        its attempts' streams is watched. A cut attempt leaves that scope: the worker carries
        the attempt on (its failure, retry or end) under a fresh one.
        """
        cut: tuple[LiveJob, Failure | None] | None = None  # an attempt ended by leaving the scope
        while True:
            attempts = _Attempts(trio.CancelScope())
            try:
                with attempts.scope:
                    if cut is not None:
                        carried, failure = cut
                        cut = None
                        await self._carry_on(carried, failure)
                    while (job := await self.queue.take()) is not None:
                        terminal = await self.step(job, attempts)
                        if terminal is not None:
                            await self._end(job, terminal)
                    return
            except _Cut as ended:  # the stream ended as the watchdog fired: its own outcome stands
                cut = (ended.job, ended.failure)
                continue
            # The scope caught the watchdog's cancellation of the stream it watched.
            job, watch = attempts.job, attempts.watch
            assert attempts.scope.cancelled_caught and job is not None and watch is not None
            failure = attempt_failure(
                job, job.spec.timeouts, fired=watch.fired, attempt_deadline=watch.deadline
            )
            cut = (job, failure)

    async def _carry_on(self, job: LiveJob, failure: Failure | None) -> None:
        """What follows an attempt's stream, for an attempt whose stream left the worker's scope."""
        await self._attempt_ended(job, failure)
        terminal = await self._next(job, failure)
        if terminal is not None:
            await self._end(job, terminal)

    async def _end(self, job: LiveJob, terminal: TerminalEvent) -> None:
        """The job has ended with ``terminal``: send it, end its followers, count it."""
        await self.send_end(job, terminal)
        waiting = self.dedupe.leader_ended(job.spec.content_hash, terminal)
        if waiting:
            await self.end_followers(waiting, terminal)
        self.queue.finished()
        halted = self.halt.record(job.spec.backend, terminal)
        if halted is not None:
            await self.halt_backend(job.spec.backend, halted)

    async def step(self, job: LiveJob, attempts: _Attempts) -> TerminalEvent | None:
        """Run the job's next attempt. Returns its terminal event, or None when it will retry
        (it is then back in the queue with the time its backoff ends) or will not run (cap).
        Raises :class:`_Cut` (or, cut by the watchdog, ``Cancelled``) out of the worker's scope;
        the worker then carries the attempt on."""
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
        failure = await self.attempt(job, attempts)
        return await self._next(job, failure)

    async def _next(self, job: LiveJob, failure: Failure | None) -> TerminalEvent | None:
        """Where the job goes after its attempt ended with ``failure``: its terminal event, or
        None when it retries (it is then back in the queue with the time its backoff ends)."""
        if failure is not None:
            _log.debug(
                "attempt failed",
                job=job.spec.id,
                attempt=job.attempt,
                kind=failure.kind,
                error=failure.message,
            )
        step = next_step(job, failure, now=self.now(), seed=self.spec.seed)
        if isinstance(step, Retry):
            await job.emit(step.event)
            self.queue.later(job, step.due, urgent=step.urgent)
            return None
        return step

    async def attempt(self, job: LiveJob, attempts: _Attempts) -> Failure | None:
        """One attempt through its backend's gate (in-flight limit, rate limits, pauses), under
        the attempt and job deadlines and the idle watchdog (which cancels ``attempts.scope``).

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
            ticket = await gate.enter(tokens, spec.model, spec.max_tokens)
        except BaseException:
            self._settle(job, None)
            raise
        job.ticket = ticket
        job.begin_attempt(self.now())
        try:
            failure = await self._stream(job, attempts)
        finally:
            spent = job.attempt_spent()  # what the summary charges this attempt, too
            ticket.used = spent.tokens
            gate.leave(ticket)
            # An unknown cost still counts what is known of it: a killed attempt was paid for.
            self._settle(job, spent.cost_usd if spent.cost_usd is not None else spent.at_least_usd)
        await self._attempt_ended(job, failure)
        return failure

    async def _attempt_ended(self, job: LiveJob, failure: Failure | None) -> None:
        """After the attempt's stream (its slot given back): its checked output, then what its
        backend's gate learns from how it ended."""
        if job.parsed is not None:
            await job.emit(job.parsed)
        gate = self.gates[job.spec.backend]
        ticket = job.ticket
        assert ticket is not None
        if failure is None:
            await gate.succeeded(ticket)
        else:
            await gate.failed(ticket, failure.kind, failure.retry_after, job.spec.retry.max_retry_after)
        if gate.slots is not None:
            self.queue.wake()  # a slot of this backend is free again (without a slot limit,
            # workers wait only for jobs: this one takes the next itself, so waking another is waste)

    def _settle(self, job: LiveJob, cost: float | None) -> None:
        if job.reserved is not None:
            self.budget.settle(job.reserved, cost)
            job.reserved = None

    async def _stream(self, job: LiveJob, attempts: _Attempts) -> Failure | None:
        """Run one attempt's stream under the idle watch and the attempt and job deadlines.

        Cut by the watchdog, it raises ``Cancelled`` (caught by the worker's scope). A stream
        that ended (returned or raised) just as the watchdog fired raises :class:`_Cut` with
        that ending's failure: the scope is cancelled and must be left before any checkpoint.
        """
        spec = job.spec
        timeouts = spec.timeouts
        backend = self.backends[spec.backend]
        waits = self.waits[spec.backend]
        idle = None if waits else timeouts.idle
        if not job.emit_nowait(self.attempt_started[spec.backend]):  # as job_queued in announce_one
            await job.emit(self.attempt_started[spec.backend])
        start = self.now()
        deadline = None if timeouts.attempt is None or waits else start + timeouts.attempt
        if job.deadline is not None:
            deadline = job.deadline if deadline is None else min(deadline, job.deadline)
        watch: Watch | None = None
        if idle is not None or deadline is not None:
            watch = job.watch = self.watchdog.watch(attempts.scope, idle, deadline, now=start)
            attempts.job, attempts.watch = job, watch
        failure: Failure | None
        try:
            await backend.stream(job.request(), job.attempt, job.emit_from_backend)
        except trio.BrokenResourceError:
            raise  # the bus is gone (a log write failed): the run ends, not just this job
        except Exception as exc:
            failure = failure_from(exc)
            if failure is None:
                # A bug, not an outcome: the job fails, and the traceback goes to the diagnostics.
                _log.warning("backend raised an unexpected exception", exc_info=exc)
                failure = internal_failure(exc)
            failure = self.redactor.value(failure)  # secrets: see orchestrator.redact
        else:
            failure = attempt_failure(job, timeouts, fired=None, attempt_deadline=0.0)
        finally:
            if watch is not None:
                self.watchdog.release(watch)
            job.watch = None
        if attempts.scope.cancel_called:
            raise _Cut(job, failure)
        return failure

    async def finish_leftovers(self, reason: str) -> None:
        """End every job that has no terminal event, now that no job task runs: a started job
        gets its own ``job_cancelled``; all jobs that never started end together in one
        ``jobs_skipped`` (positions in job order), so a stop costs the same at any batch size."""
        ranges: list[tuple[int, int]] = []
        start = -1  # the first position of the run of skipped jobs being gathered, if any
        count = 0
        end = 0  # one past the last position looked at
        # Jobs are announced in order, and only announced jobs can have started: the jobs past
        # the last announced one are one range, found without visiting each. Ended jobs the run
        # has let go of are the gaps between the live positions.
        for position, job in self.live.items():
            if position != end and start >= 0:
                ranges.append((start, end))
                start = -1
            end = position + 1
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
        total = len(self.spec.jobs)
        if self.announced < total:
            if start >= 0 and end != self.announced:
                ranges.append((start, end))
                start = -1
            start = self.announced if start < 0 else start
            count += total - self.announced
            end = total
        if start >= 0:
            ranges.append((start, end))
        if count:
            await self.emit_batch(JobsSkipped(reason=reason, count=count, ranges=tuple(ranges)))


@attrs.define(slots=True, eq=False)
class _Attempts:
    """A worker's cancel scope for its attempts, and the attempt the watchdog watches in it."""

    scope: trio.CancelScope
    job: LiveJob | None = None
    watch: Watch | None = None


class _Cut(Exception):
    """An attempt's stream ended (``failure``: how) while the watchdog cancelled its worker's
    scope: raised to leave that scope before any checkpoint; the worker carries the attempt on."""

    def __init__(self, job: LiveJob, failure: Failure | None) -> None:
        super().__init__()
        self.job = job
        self.failure = failure


def job_input(spec: JobSpec, *, log_inputs: bool) -> JobInput | None:
    """The ``job_input`` event of a job: its rendered request (unless ``log_inputs`` is off),
    its row and its metadata; None when there is nothing to say."""
    if not log_inputs and not spec.row and not spec.metadata:
        return None  # the common case, without copying two empty mappings
    # The log writes plain dicts; a job without a row shares one read-only empty mapping.
    row, metadata = dict(spec.row), dict(spec.metadata)
    if not log_inputs:
        return JobInput(row=row, metadata=metadata) if row or metadata else None
    return JobInput(
        row=row, metadata=metadata, system=spec.system, prompt=spec.prompt, messages=spec.messages
    )


def _derive_up_to(spec: BatchSpec, backend: Backend) -> int | None:
    """How far Little's law may raise a backend's unconfigured in-flight limit (None: not
    derived): its own ceiling, never above the batch's ``concurrency``."""
    ceiling = getattr(backend, "derived_concurrency_ceiling", None)
    return None if ceiling is None else min(ceiling, spec.concurrency)
