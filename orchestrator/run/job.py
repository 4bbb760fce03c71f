"""One job's life, decided in one place: its states, and what ends an attempt and the job.

Everything that decides where a job goes next lives in this file; the runner
(:mod:`orchestrator.run.runner`) only carries the decisions out (sends the events, waits at
gates, sleeps out backoffs). A job moves through these states::

    new ──announce──> queued ──admit──> admitted ──enter gate──> running ──┬──> succeeded
     │                  │                  │    ^                          ├──> failed
     │                  │                  │    └──── backoff <── retry ───┘
     └──────────────────┴──────────────────┴──> skipped (never started) / cancelled (started)

* **queued**: its ``job_queued`` event is sent (always its first event, ``seq`` 0).
* **admitted**: the spend cap let its first attempt's worst case in (:meth:`JobState.admit`).
* **running**: an attempt passed its backend's gate; the first time, the job counts as started
  and its job timeout starts (:meth:`JobState.begin_attempt`).
* The attempt ends in a :class:`Failure` or success (:func:`attempt_failure`,
  :func:`failure_from`); :func:`next_step` then says: the job succeeded, failed, or retries
  after a delay (its backoff holds no worker).
* A job with an ``output_schema`` succeeds only with a reply that meets it: the attempt's text
  is checked here, after its stream finished, whichever backend ran it (an ``invalid_output``
  failure otherwise, retried at once on its own budget, ``retry.max_invalid_output``; with
  ``retry.reask`` the next attempt's conversation holds the bad reply and why it failed).
* A stop (Ctrl-C, deadline, spend cap, a halt) ends every job that has no terminal event yet:
  ``job_cancelled`` if it started, else skipped (:func:`leftover_terminal`); the runner writes
  the skipped ones together as one batch-level ``jobs_skipped``, so a stop costs the same at
  any batch size.

Every job ends exactly once: by its own terminal event, or inside one ``jobs_skipped``.
Pure: no I/O, no clock reads (times are passed in), randomness only from the seed.
"""

from __future__ import annotations

import random

import attrs

from orchestrator.errors import BackendError, ErrorKind, leaves
from orchestrator.events import (
    AssistantMessage,
    Event,
    JobCancelled,
    JobFailed,
    JobSkipped,
    JobSucceeded,
    Message,
    OutputParsed,
    RateLimitInfo,
    RetryScheduled,
    StreamFinished,
    TerminalEvent,
    TextDelta,
    TextRetracted,
    ThinkingDelta,
    ToolCall,
    UsageReported,
)
from orchestrator.output import Invalid, check_reply
from orchestrator.record.cost import AttemptCost, AttemptMeter
from orchestrator.resources import out_of_files, out_of_files_message
from orchestrator.run.retry import backoff_delay, should_retry
from orchestrator.run.watchdog import Watch
from orchestrator.spec import JobSpec, Timeouts

_OUTPUT = frozenset({TextDelta, ThinkingDelta, ToolCall, AssistantMessage})
# The meter of a job with no attempt running (before its first, after its end): shared, and never
# changed, since no stream event reaches a job outside an attempt (begin_attempt makes a fresh one).
_NO_ATTEMPT = AttemptMeter()
OBSERVED = frozenset({StreamFinished, UsageReported, TextRetracted, RateLimitInfo, *_OUTPUT})
"""The kinds of event a job's state looks at (:meth:`JobState.observe`; a ``RateLimitInfo``
goes to the backend's gate instead): the sender skips the call for the others."""


@attrs.frozen
class Failure:
    """Why an attempt failed: an error kind, the message, whether another attempt may help, and
    the server's requested wait."""

    kind: ErrorKind
    message: str
    retryable: bool
    retry_after: float | None = None


@attrs.frozen
class Retry:
    """The job tries again: ``event`` is its ``retry_scheduled``; it becomes ready at ``due``
    (``urgent`` when the job timeout falls first: it will then time out, not run again)."""

    event: RetryScheduled
    due: float
    urgent: bool = False


Step = TerminalEvent | Retry


@attrs.define(slots=True, eq=False)
class JobState:
    """One job's mutable state, owned by the worker running it (and by the runner once the work
    has ended). ``seq`` is its next event's sequence number."""

    spec: JobSpec
    seq: int = 0
    attempt: int = 0
    queued: bool = False  # its job_queued event is sent
    admitted: bool = False  # passed the spend cap's check (its first attempt is reserved)
    started: bool = False  # its first attempt got through the backend's gate
    done: bool = False  # its terminal event is sent
    deadline: float | None = None  # when its job timeout fires (set when it starts)
    stream_finished: bool = False
    meter: AttemptMeter = _NO_ATTEMPT  # what the current attempt has spent
    reserved: float | None = None  # the spend-cap reservation its running attempt holds
    estimate: tuple[int, float] | None = None  # tokens and cost of one attempt, once worked out
    watch: Watch | None = None
    reply: list[str] | None = None  # the attempt's text so far, kept when it must be checked
    parsed: OutputParsed | None = None  # the attempt's checked structured output
    invalid_outputs: int = 0  # attempts whose reply failed the output schema
    reasked: tuple[Message, ...] = ()  # bad replies and why, for the next attempt (retry.reask)

    def request(self) -> JobSpec:
        """What the next attempt sends: the job, its conversation grown by any re-asks."""
        if not self.reasked:
            return self.spec
        spec = self.spec
        asked = (Message("user", spec.prompt),) if spec.prompt else ()
        return attrs.evolve(spec, messages=(*spec.messages, *asked, *self.reasked), prompt="")

    def admit(self, cost: float) -> None:
        """The spend cap let the job in, reserving ``cost`` for its first attempt."""
        self.admitted = True
        self.reserved = cost

    def begin_attempt(self, now: float) -> None:
        """An attempt passed its backend's gate at ``now``. The first one starts the job: its job
        timeout counts from here (waiting for a slot is not running)."""
        if not self.started:
            self.started = True
            if self.spec.timeouts.job is not None:
                self.deadline = now + self.spec.timeouts.job
        self.attempt += 1
        self.stream_finished = False
        self.meter = AttemptMeter()
        self.reply = None if self.spec.output_schema is None else []
        self.parsed = None

    def observe(self, event: Event) -> None:
        """Keep what the attempt's stream has told so far (its end, its usage, and its text when
        the job has an output schema)."""
        kind = type(event)
        if kind is StreamFinished:
            self.stream_finished = True
            self.meter.finish(event)  # type: ignore[arg-type]
        elif kind is UsageReported:
            self.meter.add_usage(event)  # type: ignore[arg-type]
        elif kind in _OUTPUT:
            self.meter.streamed = True  # the provider bills what it streamed, stated or not
        if self.reply is not None:
            if kind is TextDelta:
                self.reply.append(event.text)  # type: ignore[union-attr]
            elif kind is TextRetracted and event.chars > 0:  # type: ignore[union-attr]
                text = "".join(self.reply)
                self.reply[:] = [text[: max(0, len(text) - event.chars)]]  # type: ignore[union-attr]

    def end(self) -> None:
        """The job's terminal event is sent: what its last attempt kept (its meter, its reply) is
        let go, so a finished job holds no per-attempt objects for the rest of the batch."""
        self.done = True
        self.meter = _NO_ATTEMPT
        self.reply = None
        self.parsed = None

    def check_output(self) -> Failure | None:
        """Check the finished attempt's reply against the job's output schema: None (and
        :attr:`parsed` set) when it meets it, else an ``invalid_output`` failure that says why
        (and, with ``retry.reask``, the reply and the reason kept for the next attempt)."""
        schema = self.spec.output_schema
        if schema is None or self.reply is None:
            return None
        text = "".join(self.reply)
        found = check_reply(schema, text)
        if not isinstance(found, Invalid):
            self.parsed = OutputParsed(found)
            return None
        if self.spec.retry.reask:
            self.reasked = (*self.reasked, Message("assistant", text), Message("user", reask_prompt(found)))
        return Failure(ErrorKind.INVALID_OUTPUT, found.message, True)

    def attempt_spent(self) -> AttemptCost:
        """What the last attempt used and cost, by the one rule the summary uses too."""
        return self.meter.cost()

    def timed_out(self, now: float) -> bool:
        """Whether the job timeout has passed at ``now``."""
        return self.deadline is not None and now >= self.deadline

    def timeout_failure(self) -> JobFailed:
        """The terminal event of a job whose job timeout fired."""
        limit = self.spec.timeouts.job
        return JobFailed(ErrorKind.TIMEOUT_JOB, f"job timed out after {limit:g}s", False, self.attempt)


def failure_from(exc: Exception) -> Failure | None:
    """Classify an exception that ended an attempt. Backend errors keep their kind; running out
    of file descriptors is a retryable ``resources`` failure; anything else is a bug in the
    backend (None: the caller records it as ``internal``, with its traceback in the diagnostics)."""
    if isinstance(exc, ExceptionGroup):
        inner = leaves(exc)
        found = next((e for e in inner if isinstance(e, BackendError)), inner[0])
        if not isinstance(found, Exception):
            return None
        exc = found
    if isinstance(exc, BackendError):
        return Failure(exc.kind, exc.message, exc.retryable, getattr(exc, "retry_after", None))
    if out_of_files(exc):  # not a bug: the process ran out of file descriptors; later may do
        return Failure(ErrorKind.RESOURCES, out_of_files_message(exc), True)
    return None


def internal_failure(exc: BaseException) -> Failure:
    """A backend's unexpected exception: fatal for this job only, the batch goes on."""
    return Failure(ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}", False)


def attempt_failure(
    job: JobState, timeouts: Timeouts, *, fired: str | None, attempt_deadline: float
) -> Failure | None:
    """How an attempt whose stream returned (or was cut by the watchdog) ended.

    ``fired`` is what the watchdog cut it for (``"idle"`` or ``"deadline"``), None if it was not
    cut; ``attempt_deadline`` is the deadline the watchdog held. A stream that returned without
    ``stream_finished`` broke the backend contract (a retryable ``protocol`` failure).
    """
    if fired == "idle":
        return Failure(ErrorKind.TIMEOUT_IDLE, f"stream stalled: no event for {timeouts.idle:g}s", True)
    if fired is not None:
        if job.deadline is not None and attempt_deadline >= job.deadline:
            return Failure(ErrorKind.TIMEOUT_JOB, "", False)
        return Failure(ErrorKind.TIMEOUT_ATTEMPT, f"attempt timed out after {timeouts.attempt:g}s", True)
    if not job.stream_finished:
        return Failure(ErrorKind.PROTOCOL, "stream ended without a stream_finished event", True)
    return job.check_output()


def reask_prompt(invalid: Invalid) -> str:
    """The user turn that follows a reply that failed the output schema (``retry.reask``)."""
    return (
        f"Your reply was not accepted: {invalid.message}. "
        "Reply again with only the JSON value, meeting the schema."
    )


def next_step(job: JobState, failure: Failure | None, *, now: float, seed: int) -> Step:
    """Where the job goes after its attempt ended with ``failure`` (None: success).

    A job timeout ends the job; a failure the retry policy allows schedules another attempt after
    a backoff drawn from a generator seeded per job and attempt (so the schedule does not depend
    on task scheduling order), never sooner than the server's Retry-After. An ``invalid_output``
    failure is counted (:attr:`JobState.invalid_outputs`) and retried at once while
    ``retry.max_invalid_output`` allows; other failures' attempts leave those out.
    """
    spec = job.spec
    if failure is None:
        return JobSucceeded(attempts=job.attempt)
    if failure.kind == ErrorKind.TIMEOUT_JOB:
        return job.timeout_failure()
    if failure.kind == ErrorKind.INVALID_OUTPUT:
        # Its own budget, and no backoff: the provider is fine, the reply was not. Counted here,
        # so an invalid output a backend reports itself (claude-code's) counts the same.
        job.invalid_outputs += 1
        if not failure.retryable or job.invalid_outputs > spec.retry.max_invalid_output:
            return JobFailed(failure.kind, failure.message, failure.retryable, job.attempt)
        delay = 0.0
    else:
        if not should_retry(spec.retry, job.attempt - job.invalid_outputs, failure.retryable):
            return JobFailed(failure.kind, failure.message, failure.retryable, job.attempt)
        u = random.Random(f"{seed}:{spec.id}:{job.attempt}").random()
        delay = backoff_delay(spec.retry, job.attempt - job.invalid_outputs, failure.retry_after, u)
    event = RetryScheduled(delay, failure.kind, failure.message, failure.retry_after)
    due = now + delay
    if job.deadline is not None and job.deadline <= due:
        return Retry(event, job.deadline, urgent=True)
    return Retry(event, due)


def leftover_terminal(job: JobState, reason: str) -> TerminalEvent:
    """The terminal event of a job a stop left without one: cancelled if it started, else skipped."""
    if job.started:
        return JobCancelled(reason=reason, attempts=job.attempt)
    return JobSkipped(reason=reason)
