"""Folding tagged events into job results and a batch summary. Pure: no I/O, no clock.

The same fold runs live (as a bus subscriber) and offline over a log, so a report recomputed
from the log equals what the live run printed. Only the final attempt's output (text, tool
calls, time to first token) makes the job's result; a retried attempt's partial output stays in
the log only. Tokens and cost add up over every attempt, since retried attempts were paid for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from orchestrator.events import (
    AssistantMessage,
    AttemptStarted,
    BatchStarted,
    BatchSummary,
    JobCancelled,
    JobFailed,
    JobInput,
    JobQueued,
    JobSkipped,
    JobSucceeded,
    RetryScheduled,
    StreamFinished,
    Tagged,
    TextDelta,
    TextRetracted,
    ThinkingDelta,
    Tokens,
    ToolCall,
    UsageReported,
)
from orchestrator.spec import NO_ROW

JobStatus = Literal["succeeded", "failed", "cancelled", "skipped"]
_FIRST_OUTPUT = (TextDelta, ThinkingDelta, ToolCall, AssistantMessage)
_NONE = Tokens()  # frozen, so every fresh attempt and job can share it


@attrs.frozen
class JobResult:
    """How one job ended.

    ``text`` is the final attempt's reply, or None when the batch was run without keeping
    texts (they are in the log). ``duration_s`` runs from the first attempt's start to the end.
    """

    job_id: str
    status: JobStatus
    attempts: int
    text: str | None
    tool_calls: tuple[ToolCall, ...]
    tokens: Tokens
    cost_usd: float | None
    ttft_s: float | None
    duration_s: float | None
    stop_reason: str | None = None
    session_id: str | None = None
    error_kind: str | None = None
    error: str | None = None
    row: Mapping[str, Any] = NO_ROW
    """The data-file row the job came from (the columns kept), from its ``job_input``."""
    metadata: Mapping[str, Any] = NO_ROW
    """The job's ``metadata`` table, from its ``job_input``."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


@attrs.define(slots=True)
class _Attempt:
    """What one running attempt has produced so far."""

    started: float
    parts: list[str] | None
    tool_calls: list[ToolCall] = attrs.Factory(list)
    first_output: float | None = None
    usage: Tokens = _NONE
    usage_cost: float | None = None
    finished: StreamFinished | None = None

    def tokens(self) -> Tokens:
        if self.finished is not None and self.finished.tokens is not None:
            return self.finished.tokens
        return self.usage

    def cost(self) -> float | None:
        if self.finished is not None and self.finished.cost_usd is not None:
            return self.finished.cost_usd
        return self.usage_cost


@attrs.define(slots=True)
class _Job:
    """A job between its first event and its terminal event."""

    first_start: float | None = None
    attempts: int = 0
    current: _Attempt | None = None
    tokens: Tokens = _NONE
    cost: float = 0.0
    cost_unknown: bool = False
    input: JobInput | None = None

    def close_attempt(self) -> None:
        attempt = self.current
        if attempt is None:
            return
        tokens, cost = attempt.tokens(), attempt.cost()
        self.tokens = tokens if self.tokens is _NONE else self.tokens + tokens
        if cost is not None:
            self.cost += cost
        elif tokens.total or attempt.finished is not None:
            # A finished stream without a cost (unknown price, no usage) is unknown, not free;
            # an attempt refused before it consumed anything (a 429, say) cost nothing.
            self.cost_unknown = True


class Aggregator:
    """Folds tagged events, in per-job order, into :class:`JobResult` values and a summary.

    ``keep_text=False`` keeps no reply text in memory (a 100k-job batch stays small); the text
    is in the log either way.
    """

    def __init__(self, *, keep_text: bool = True) -> None:
        self.keep_text = keep_text
        self.results: dict[str, JobResult] = {}
        self._running: dict[str, _Job] = {}
        self._queued = 0
        self._attempts = 0
        self._retries = 0
        self._failures: dict[str, int] = {}
        self._already_done = 0

    def apply_all(self, events: Iterable[Tagged]) -> None:
        for tagged in events:
            self.apply(tagged)

    def apply(self, tagged: Tagged) -> None:
        job_id = tagged.job_id
        if job_id is None:
            if isinstance(tagged.event, BatchStarted):
                self._already_done = tagged.event.already_done
            return
        event = tagged.event
        job = self._running.get(job_id)
        if job is None:
            if isinstance(event, JobQueued):
                self._queued += 1
            job = self._running[job_id] = _Job()
        attempt = job.current
        match event:
            case TextDelta(text=text):
                if attempt is not None:
                    if attempt.first_output is None:
                        attempt.first_output = tagged.ts
                    if attempt.parts is not None:
                        attempt.parts.append(text)
            case TextRetracted(chars=chars):
                if attempt is not None and attempt.parts is not None and chars > 0:
                    text = "".join(attempt.parts)
                    attempt.parts[:] = [text[: max(0, len(text) - chars)]]
            case ToolCall():
                if attempt is not None:
                    if attempt.first_output is None:
                        attempt.first_output = tagged.ts
                    attempt.tool_calls.append(event)
            case ThinkingDelta() | AssistantMessage():
                if attempt is not None and attempt.first_output is None:
                    attempt.first_output = tagged.ts
            case UsageReported(tokens=tokens, cost_usd=cost):
                if attempt is not None:
                    attempt.usage = attempt.usage + tokens
                    if cost is not None:
                        attempt.usage_cost = (attempt.usage_cost or 0.0) + cost
            case StreamFinished():
                if attempt is not None:
                    attempt.finished = event
            case AttemptStarted():
                job.close_attempt()
                self._attempts += 1
                job.attempts += 1
                if job.first_start is None:
                    job.first_start = tagged.ts
                job.current = _Attempt(started=tagged.ts, parts=[] if self.keep_text else None)
            case RetryScheduled():
                self._retries += 1
                job.close_attempt()
                job.current = None
            case JobInput():
                job.input = event
            case JobSucceeded() | JobFailed() | JobCancelled() | JobSkipped():
                self._finish(job_id, job, tagged)
            case _:
                pass

    def _finish(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        event = tagged.event
        attempt = job.current
        job.close_attempt()
        del self._running[job_id]
        status: JobStatus
        error_kind: str | None = None
        error: str | None = None
        if isinstance(event, JobSucceeded):
            status = "succeeded"
        elif isinstance(event, JobFailed):
            status, error_kind, error = "failed", event.error_kind, event.message
            self._failures[event.error_kind] = self._failures.get(event.error_kind, 0) + 1
        elif isinstance(event, JobCancelled):
            status, error_kind, error = "cancelled", "cancelled", event.reason
        else:
            status, error_kind, error = "skipped", "skipped", getattr(event, "reason", None)
        output = attempt if status == "succeeded" else None
        finished = attempt.finished if attempt is not None else None
        self.results[job_id] = JobResult(
            job_id=job_id,
            status=status,
            attempts=job.attempts,
            text="".join(output.parts) if output is not None and output.parts is not None else None,
            tool_calls=tuple(output.tool_calls) if output is not None else (),
            tokens=job.tokens,
            cost_usd=None if job.cost_unknown else job.cost,
            ttft_s=_elapsed(output.started, output.first_output) if output is not None else None,
            duration_s=_elapsed(job.first_start, tagged.ts),
            stop_reason=finished.stop_reason if finished is not None else None,
            session_id=finished.session_id if finished is not None else None,
            error_kind=error_kind,
            error=error,
            row=job.input.row if job.input is not None else NO_ROW,
            metadata=job.input.metadata if job.input is not None else NO_ROW,
        )

    def summary(self, wall_s: float, *, stopped: str | None = None) -> BatchSummary:
        """The batch so far, as if it ended ``wall_s`` seconds after it started."""
        results = self.results.values()
        counts = {"succeeded": 0, "failed": 0, "cancelled": 0, "skipped": 0}
        tokens = Tokens()
        cost = 0.0
        cost_unknown = 0
        latencies: list[float] = []
        ttfts: list[float] = []
        for result in results:
            counts[result.status] += 1
            tokens = tokens + result.tokens
            if result.cost_usd is None:
                cost_unknown += 1
            else:
                cost += result.cost_usd
            if result.status == "succeeded":
                if result.duration_s is not None:
                    latencies.append(result.duration_s)
                if result.ttft_s is not None:
                    ttfts.append(result.ttft_s)
        return summarize(
            counts=counts,
            jobs=self._queued,
            attempts=self._attempts,
            retries=self._retries,
            tokens=tokens,
            cost=cost,
            cost_unknown=cost_unknown,
            wall_s=wall_s,
            latencies=latencies,
            ttfts=ttfts,
            failures=self._failures,
            stopped=stopped,
            already_done=self._already_done,
        )

    @property
    def running(self) -> Mapping[str, object]:
        return self._running


def summarize(
    *,
    counts: Mapping[str, int],
    jobs: int,
    attempts: int,
    retries: int,
    tokens: Tokens,
    cost: float,
    cost_unknown: int,
    wall_s: float,
    latencies: list[float],
    ttfts: list[float],
    failures: Mapping[str, int],
    stopped: str | None,
    already_done: int = 0,
) -> BatchSummary:
    """A :class:`BatchSummary` from totals: rates, percentiles and rounding done one way for the
    live fold and for reports that combine several runs."""
    latencies = sorted(latencies)
    ttfts = sorted(ttfts)
    done = counts["succeeded"] + counts["failed"]
    return BatchSummary(
        jobs=jobs,
        attempts=attempts,
        retries=retries,
        tokens=tokens,
        cost_usd=round(cost, 9),
        cost_unknown_jobs=cost_unknown,
        wall_s=wall_s,
        jobs_per_s=done / wall_s if wall_s > 0 else 0.0,
        tokens_per_s=tokens.output / wall_s if wall_s > 0 else 0.0,
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        latency_max_s=latencies[-1] if latencies else None,
        ttft_p50_s=percentile(ttfts, 50),
        failures=dict(sorted(failures.items())),
        stopped=stopped,
        already_done=already_done,
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        cancelled=counts["cancelled"],
        skipped=counts["skipped"],
    )


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _elapsed(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return end - start


def fold(events: Iterable[Tagged], *, keep_text: bool = True) -> Aggregator:
    """Fold a whole event sequence (e.g. a log) into a fresh :class:`Aggregator`."""
    aggregator = Aggregator(keep_text=keep_text)
    aggregator.apply_all(events)
    return aggregator
