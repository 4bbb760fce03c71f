"""Everything that can happen in a batch, as a closed set of small frozen values.

Two families share one bus:

* stream events, emitted by a backend while one attempt of one job streams;
* lifecycle events, emitted by the orchestrator around attempts, jobs and the batch.

Each class has a stable ``kind`` string: it names the event in the JSONL log and never changes
meaning. Adding a kind is a deliberate, reviewable change to this file and to :data:`Event`.
Field names never collide with the tag fields (``job``, ``attempt``, ``seq``, ``seq_end``, ``ts``,
``kind``),
so a log line is the tag and the event's fields side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import attrs

from orchestrator.errors import ErrorKind

# --- values carried by events -----------------------------------------------------------------


@attrs.frozen(slots=True)
class Tokens:
    """Token counts; ``+`` adds them field by field, :meth:`sum` many at once."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_creation + other.cache_creation,
        )

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_creation

    @staticmethod
    def sum(many: Iterable[Tokens]) -> Tokens:
        """What ``+`` makes of ``many`` (``Tokens()`` for none), without a value per step: a
        batch's summary adds up one per job."""
        inputs = outputs = reads = creations = 0
        for tokens in many:
            inputs += tokens.input
            outputs += tokens.output
            reads += tokens.cache_read
            creations += tokens.cache_creation
        return Tokens(inputs, outputs, reads, creations)


@attrs.frozen
class BatchSummary:
    """What a batch did, folded from its events alone (so a log reproduces it exactly).

    Latencies are job durations (first attempt start to terminal event) of succeeded jobs;
    percentiles use the nearest-rank method. ``cost_usd`` adds every known cost, retried attempts
    included (they were paid for); ``cost_unknown_jobs`` counts jobs whose cost is not known.
    """

    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    attempts: int = 0
    retries: int = 0
    tokens: Tokens = Tokens()
    cost_usd: float = 0.0
    cost_unknown_jobs: int = 0
    wall_s: float = 0.0
    jobs_per_s: float = 0.0
    tokens_per_s: float = 0.0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_max_s: float | None = None
    ttft_p50_s: float | None = None
    failures: Mapping[ErrorKind, int] = attrs.field(factory=dict)
    """Failed jobs by the kind of their last failure."""
    stopped: str | None = None
    """Why the batch stopped early (``"interrupted"``, ``"deadline"``), or None."""
    already_done: int = 0
    """Jobs a resumed run did not run again because the log shows them done."""
    simulated_jobs: int = 0
    """Jobs that ran on the simulator (``sim``): their text, tokens and cost are made up."""
    priced_by: Mapping[str, str] = attrs.field(factory=dict)
    """Model -> the price source that priced its replies (``"genai-prices 0.2.5"``,
    ``"built-in table"``, ``"job file"``), for backends that price replies from a table."""
    stream_warnings: int = 0
    """``stream_warning`` events: odd data a backend read past (a reply without usage, tool input
    that is not JSON, a stream that ended without its end marker). The messages are in the log."""
    deduplicated: int = 0
    """Jobs that ended with the outcome of an identical job's request, sent once for both (see
    :class:`JobDeduplicated`): counted in ``succeeded``/``failed``, not in tokens or cost."""

    @property
    def simulated(self) -> bool:
        return self.simulated_jobs > 0

    @property
    def ok(self) -> bool:
        return self.succeeded == self.jobs and self.stopped is None


# --- content blocks of a complete assistant message -------------------------------------------


@attrs.frozen
class TextBlock:
    type: ClassVar[str] = "text"
    text: str


@attrs.frozen
class ThinkingBlock:
    type: ClassVar[str] = "thinking"
    text: str


@attrs.frozen
class ToolUseBlock:
    type: ClassVar[str] = "tool_use"
    call_id: str
    name: str
    input: Mapping[str, Any]


@attrs.frozen
class Message:
    """One turn of a conversation a job sends: ``role`` is ``user``, ``assistant`` or ``system``."""

    role: str = attrs.field(metadata={"choices": ("user", "assistant")})
    content: str


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock
CONTENT_BLOCKS: tuple[type[ContentBlock], ...] = (TextBlock, ThinkingBlock, ToolUseBlock)

# --- stream events (a backend emits these) ------------------------------------------------------


@attrs.frozen
class SessionStarted:
    """The backend opened a session: its id, the model that answers, the tools it offers."""

    kind: ClassVar[str] = "session_started"
    session_id: str | None = None
    model: str | None = None
    tools: tuple[str, ...] = ()
    request_id: str | None = None
    """The provider's id of this attempt's HTTP request (``request-id``, ``x-request-id``), for
    its support; None when there is none (logs before it: None)."""


@attrs.frozen
class TextDelta:
    """A piece of the reply text, in order."""

    kind: ClassVar[str] = "text_delta"
    text: str


@attrs.frozen
class TextRetracted:
    """The backend abandoned the last ``chars`` characters of reply text it had streamed (a
    broken stream it then recovered from): they are not part of the answer."""

    kind: ClassVar[str] = "text_retracted"
    chars: int


@attrs.frozen
class ThinkingDelta:
    """A piece of the model's visible reasoning, in order."""

    kind: ClassVar[str] = "thinking_delta"
    text: str


@attrs.frozen
class AssistantMessage:
    """One complete assistant message (one turn), with all its content blocks."""

    kind: ClassVar[str] = "assistant_message"
    content: tuple[ContentBlock, ...]
    message_id: str | None = None


@attrs.frozen
class ToolCall:
    """The model asked for a tool, with its full input."""

    kind: ClassVar[str] = "tool_call"
    call_id: str
    name: str
    input: Mapping[str, Any]


@attrs.frozen
class ToolResult:
    """A tool ran (inside the backend, e.g. the Claude Code CLI) and this is what it returned."""

    kind: ClassVar[str] = "tool_result"
    call_id: str
    content: str
    is_error: bool = False


@attrs.frozen
class SystemNotice:
    """Something the backend reported about itself (its own retries, a model fallback, a status)."""

    kind: ClassVar[str] = "system_notice"
    subtype: str
    data: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class UsageReported:
    """Tokens one API call consumed, and its cost when known. Several in an attempt add up.

    A failed attempt (no :class:`StreamFinished`) is charged what its usage events report.
    """

    kind: ClassVar[str] = "usage"
    tokens: Tokens
    cost_usd: float | None = None
    estimated_cost_usd: float | None = None
    """What a price table makes of ``tokens`` where the backend states no cost of its own (the
    Claude Code CLI's per-message usage, before its result). Not a billed cost: the job's cost
    stays unknown, but the spend cap counts it, a lower bound for an attempt cut short."""


@attrs.frozen
class StreamFinished:
    """The attempt's stream ended normally.

    ``tokens``, when given, is the backend's own total for the attempt and replaces the sum of
    the attempt's :class:`UsageReported` events. ``cost_usd`` is None when the cost is unknown.
    """

    kind: ClassVar[str] = "stream_finished"
    stop_reason: str | None = None
    tokens: Tokens | None = None
    cost_usd: float | None = None
    duration_s: float | None = None
    turns: int | None = None
    session_id: str | None = None
    priced_by: str | None = None
    """Which price source gave ``cost_usd`` when the backend priced the reply itself from a table
    ("job file", "genai-prices 0.2.5", "built-in table"); None otherwise (logs before it: None)."""
    result_text: str | None = None
    """The backend's own final answer where it gives one apart from the streamed text (the Claude
    Code CLI's ``result``: the last message's text); None otherwise."""
    permission_denials: tuple[Mapping[str, Any], ...] = ()
    """Tool uses the backend refused for want of permission (the Claude Code CLI's
    ``permission_denials``: ``tool_name``, ``tool_use_id``, ``tool_input``), as it reported them."""
    refusal: str | None = None
    """The model's refusal, kept apart from the reply text (OpenAI's ``refusal`` field); None
    when it did not refuse that way (Anthropic says ``stop_reason = "refusal"`` instead)."""


@attrs.frozen
class RateLimitInfo:
    """What the server said about its rate limits (response headers, the CLI's rate-limit event).

    Limits are per minute; ``*_reset_s`` are seconds until the quota refills. The runner paces
    the backend with it: a lower announced limit is adopted, an empty quota pauses new attempts.
    """

    kind: ClassVar[str] = "rate_limit_info"
    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset_s: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_s: float | None = None
    input_tokens_limit: int | None = None
    """Anthropic's input-token limit (uncached input; cache reads do not count on current models)."""
    input_tokens_remaining: int | None = None
    input_tokens_reset_s: float | None = None
    output_tokens_limit: int | None = None
    output_tokens_remaining: int | None = None
    output_tokens_reset_s: float | None = None


@attrs.frozen
class StreamWarning:
    """The backend saw something odd (a line that is not JSON, say) and carried on."""

    kind: ClassVar[str] = "stream_warning"
    message: str


@attrs.frozen
class Unrecognized:
    """Backend output of a type this version does not know, kept whole instead of dropped."""

    kind: ClassVar[str] = "unrecognized"
    data: Mapping[str, Any]


# --- lifecycle events (the orchestrator emits these) --------------------------------------------


@attrs.frozen
class BatchStarted:
    kind: ClassVar[str] = "batch_started"
    run_id: str
    jobs: int
    started_at: str
    """Wall-clock start, ISO 8601 UTC; every ``ts`` counts seconds from this instant."""
    already_done: int = 0
    """Jobs of the job file not run again because a resumed log shows them done."""


@attrs.frozen
class JobQueued:
    """A job's first event: it is part of this run. Sent in job order as the run starts (the
    first jobs at once, the rest while the first attempts run), and always before the job's
    first attempt or its terminal event."""

    kind: ClassVar[str] = "job_queued"
    backend: str
    model: str | None
    content_hash: str
    """Hash of the query and every setting that shapes the answer; resume matches on it."""


@attrs.frozen
class AttemptStarted:
    kind: ClassVar[str] = "attempt_started"
    backend: str


@attrs.frozen
class RetryScheduled:
    """The attempt in the tag failed and the job will try again after ``delay_s``."""

    kind: ClassVar[str] = "retry_scheduled"
    delay_s: float
    error_kind: ErrorKind
    message: str
    retry_after_s: float | None = None


@attrs.frozen
class OutputParsed:
    """The attempt in the tag replied with JSON that meets the job's ``output_schema``: ``value``
    is that JSON, parsed. Sent after the attempt's stream ended, before ``job_succeeded``."""

    kind: ClassVar[str] = "output_parsed"
    value: Any


@attrs.frozen
class JobSucceeded:
    kind: ClassVar[str] = "job_succeeded"
    attempts: int


@attrs.frozen
class JobFailed:
    kind: ClassVar[str] = "job_failed"
    error_kind: ErrorKind
    message: str
    retryable: bool
    attempts: int


@attrs.frozen
class JobSkipped:
    """The job never started. Written by earlier versions for each such job; a stop now ends
    them all with one :class:`JobsSkipped`. Still read from old logs."""

    kind: ClassVar[str] = "job_skipped"
    reason: str


@attrs.frozen
class JobsSkipped:
    """Jobs that never started, ended together when the batch stopped (batch-level: ``job`` is
    null). One event however many jobs, so a stop stays quick at any batch size.

    ``ranges`` are half-open ``[start, end)`` positions in the run's job order, which is the
    order of the run's ``job_queued`` events (jobs are announced in job order); ``count`` is how
    many positions they cover. A position past the run's last ``job_queued`` is a job that was
    never announced: it appears in the log only here (and in the header's ``jobs``). Every job
    in a range is skipped, as if it had its own ``job_skipped``.
    """

    kind: ClassVar[str] = "jobs_skipped"
    reason: str
    count: int
    ranges: tuple[tuple[int, int], ...]


@attrs.frozen
class JobCancelled:
    """The job had started and was stopped from outside (Ctrl-C, batch deadline)."""

    kind: ClassVar[str] = "job_cancelled"
    reason: str
    attempts: int


@attrs.frozen
class LimiterChanged:
    """The runner changed how fast it sends to a backend (batch-level: ``job`` is null).

    ``change``: ``concurrency`` (new in-flight limit in ``value``), ``rpm``/``tpm`` (a limit the
    server announced), ``paused`` (no new attempts until ``until_s``), ``pacing`` (a start waits
    until ``until_s`` for the rate limit), ``spend_cap`` (no new jobs: the cost cap is reached),
    ``halted`` (no new jobs on this backend: its jobs keep failing; see :mod:`orchestrator.run.halt`).
    ``until_s`` counts seconds from the batch start, like ``ts``.
    """

    kind: ClassVar[str] = "limiter_changed"
    backend: str
    change: str
    value: float | None
    until_s: float | None
    reason: str


@attrs.frozen
class BatchSubmitting:
    """A batch backend is about to send the create call of a remote batch (batch-level): the
    chunk's ``label`` (the one the provider's list may show it by), the jobs whose attempts it
    holds (``custom_ids``) and ``at``, wall-clock Unix seconds before the call. On disk before
    the call goes: should the run die before its ``batch_submitted`` is written, a resumed run
    looks this batch up at the provider and adopts it rather than paying for it twice."""

    kind: ClassVar[str] = "batch_submitting"
    backend: str
    label: str
    custom_ids: tuple[str, ...]
    at: float


@attrs.frozen
class BatchSubmitted:
    """A batch backend created a remote batch (batch-level: ``job`` is null): its id at the
    provider and the jobs whose attempts it holds (``custom_ids``, the job ids where the provider
    accepts them)."""

    kind: ClassVar[str] = "batch_submitted"
    backend: str
    remote_id: str
    custom_ids: tuple[str, ...]
    note: str = ""
    """Empty, or how the batch was found when its create call failed after the provider made
    it (a timeout, a dropped connection): it was adopted, not sent again."""


@attrs.frozen
class BatchProgress:
    """A poll of a remote batch (batch-level): its request counts by state, in the provider's
    words (``processing``, ``succeeded``, ``errored``, ``expired``, ...)."""

    kind: ClassVar[str] = "batch_progress"
    backend: str
    remote_id: str
    counts: Mapping[str, int]


@attrs.frozen
class BatchStopped:
    """The run stopped while a remote batch still ran (batch-level): ``action`` is ``detach``
    (left running; ``--resume`` collects it) or ``cancel`` (the provider accepted the cancel; a
    resumed run collects what it finished and sends the rest again). ``note`` says why a cancel
    that was asked for did not happen."""

    kind: ClassVar[str] = "batch_stopped"
    backend: str
    remote_id: str
    action: str
    note: str = ""


@attrs.frozen
class JobInput:
    """What a job sends and where it came from, right after its ``job_queued``.

    ``system``, ``prompt`` and ``messages`` are the rendered request (None and empty when the
    batch has ``log_inputs = false``); ``row`` is the data-file row (the columns kept) and
    ``metadata`` the job's metadata table, so answers join back to their inputs."""

    kind: ClassVar[str] = "job_input"
    row: Mapping[str, Any]
    metadata: Mapping[str, Any]
    system: str | None = None
    prompt: str | None = None
    messages: tuple[Message, ...] = ()


@attrs.frozen
class JobDeduplicated:
    """The job's request is identical to that of ``leader``, a job announced before it in this
    run (the same content hash): it is sent once, for both. Sent right after the job's
    ``job_queued`` (and ``job_input``); the job then makes no attempt of its own and ends with
    a copy of the leader's terminal event (``job_succeeded`` or ``job_failed``), whose outcome
    (text, output, tool calls, usage, stop reason, error) readers take from the leader's
    events. If the leader never ends (a stop), the job ends as any unstarted job does."""

    kind: ClassVar[str] = "job_deduplicated"
    leader: str


@attrs.frozen
class BatchFinished:
    kind: ClassVar[str] = "batch_finished"
    summary: BatchSummary


StreamEvent = (
    SessionStarted
    | TextDelta
    | TextRetracted
    | ThinkingDelta
    | AssistantMessage
    | ToolCall
    | ToolResult
    | SystemNotice
    | UsageReported
    | StreamFinished
    | StreamWarning
    | Unrecognized
    | RateLimitInfo
)
LifecycleEvent = (
    BatchStarted
    | JobQueued
    | AttemptStarted
    | RetryScheduled
    | OutputParsed
    | JobSucceeded
    | JobFailed
    | JobSkipped
    | JobCancelled
    | JobsSkipped
    | LimiterChanged
    | BatchFinished
    | JobInput
    | JobDeduplicated
    | BatchSubmitting
    | BatchSubmitted
    | BatchProgress
    | BatchStopped
)
Event = StreamEvent | LifecycleEvent
TerminalEvent = JobSucceeded | JobFailed | JobSkipped | JobCancelled

STREAM_EVENTS: tuple[type[StreamEvent], ...] = (
    SessionStarted,
    TextDelta,
    TextRetracted,
    ThinkingDelta,
    AssistantMessage,
    ToolCall,
    ToolResult,
    SystemNotice,
    UsageReported,
    StreamFinished,
    StreamWarning,
    Unrecognized,
    RateLimitInfo,
)
LIFECYCLE_EVENTS: tuple[type[LifecycleEvent], ...] = (
    BatchStarted,
    JobQueued,
    AttemptStarted,
    RetryScheduled,
    OutputParsed,
    JobSucceeded,
    JobFailed,
    JobSkipped,
    JobCancelled,
    JobsSkipped,
    LimiterChanged,
    BatchFinished,
    JobInput,
    JobDeduplicated,
    BatchSubmitting,
    BatchSubmitted,
    BatchProgress,
    BatchStopped,
)
TERMINAL_EVENTS: tuple[type[TerminalEvent], ...] = (JobSucceeded, JobFailed, JobSkipped, JobCancelled)
DURABLE_EVENTS: tuple[type[Event], ...] = (*TERMINAL_EVENTS, BatchSubmitting, BatchSubmitted)
"""The kinds the log fsyncs at once (with ``fsync = "terminal"``): a job's end, and what a
resumed run needs to find the remote batches it paid for."""
SPANNED_EVENTS: tuple[type[TextDelta | ThinkingDelta], ...] = (TextDelta, ThinkingDelta)
"""The kinds the log writes a run of as one line (see :attr:`Tagged.seq_end`)."""
EVENT_TYPES: dict[str, type[Event]] = {cls.kind: cls for cls in (*STREAM_EVENTS, *LIFECYCLE_EVENTS)}


class Tagged(NamedTuple):
    """An event as it travels on the bus and lands in the log. A named tuple, not an attrs
    class: one is made for every event, and a tuple is the cheapest immutable value to make.

    ``job_id`` is None for batch-level events. ``seq`` counts the job's events from 0 without
    gaps, across all its attempts; batch-level events have their own count. ``ts`` is seconds
    since the batch started, on the run's clock (trio's clock, so virtual in tests), rounded to
    microseconds.

    ``seq_end`` is None on the bus. A record read from the log may stand for several consecutive
    text (or thinking) deltas of one attempt, which the log writes as one line: its event holds
    their concatenated text, ``seq`` and ``ts`` are the first delta's and ``seq_end`` the last's
    ``seq`` (see :func:`orchestrator.record.log.coalesce`).
    """

    job_id: str | None
    attempt: int
    seq: int
    ts: float
    event: Event
    seq_end: int | None = None

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last bus event this record stands for."""
        return self.seq if self.seq_end is None else self.seq_end
