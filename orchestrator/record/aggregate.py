"""Folding tagged events into job results and a batch summary. Pure: no I/O, no clock.

The same fold runs live (as a bus subscriber) and offline over a log, so a report recomputed
from the log equals what the live run printed. Only the final attempt's output (text, tool
calls, time to first token) makes the job's result; a retried attempt's partial output stays in
the log only. Tokens and cost add up over every attempt, since retried attempts were paid for;
what one attempt cost is :func:`~orchestrator.record.cost.attempt_cost`'s to say. A job's cost is
unknown (None) when any of its attempts' cost is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs

from orchestrator.backends import SIMULATOR
from orchestrator.errors import ErrorKind
from orchestrator.events import (
    AssistantMessage,
    AttemptStarted,
    BatchStarted,
    BatchSummary,
    JobCancelled,
    JobDeduplicated,
    JobFailed,
    JobInput,
    JobQueued,
    JobSkipped,
    JobsSkipped,
    JobSucceeded,
    OutputParsed,
    RetryScheduled,
    SessionStarted,
    StreamFinished,
    StreamWarning,
    Tagged,
    TextDelta,
    TextRetracted,
    ThinkingDelta,
    Tokens,
    ToolCall,
    UsageReported,
)
from orchestrator.record.cost import AttemptMeter

# What a job's result is, and the summary's arithmetic, have their own modules; their names
# stay importable from here, where callers have always found them.
from orchestrator.record.job_result import JobResult as JobResult
from orchestrator.record.job_result import JobStatus as JobStatus
from orchestrator.record.job_result import ResultsInJobOrder as ResultsInJobOrder
from orchestrator.record.job_result import shared_result as shared_result
from orchestrator.record.job_result import skipped_result as skipped_result
from orchestrator.record.summary import percentile as percentile
from orchestrator.record.summary import summarize as summarize
from orchestrator.spec import NO_ROW

_NONE = Tokens()  # frozen, so every fresh attempt and job can share it


@attrs.define(slots=True)
class _Attempt:
    """What one running attempt has produced so far."""

    started: float
    parts: list[str] | None
    tool_calls: list[ToolCall] = attrs.Factory(list)
    first_output: float | None = None
    meter: AttemptMeter = attrs.Factory(AttemptMeter)
    output: Any = None
    request_id: str | None = None


@attrs.define(slots=True)
class _Job:
    """A job between its first event and its terminal event."""

    first_start: float | None = None
    attempts: int = 0
    current: _Attempt | None = None
    tokens: Tokens = _NONE
    cost: float = 0.0
    cost_unknown: bool = False
    model: str | None = None
    backend: str | None = None
    input: JobInput | None = None
    leader: str | None = None  # the job whose request answers this one (job_deduplicated)

    def close_attempt(self) -> None:
        attempt = self.current
        if attempt is None:
            return
        spent = attempt.meter.cost()
        self.tokens = spent.tokens if self.tokens is _NONE else self.tokens + spent.tokens
        if spent.cost_usd is None:
            self.cost_unknown = True
        else:
            self.cost += spent.cost_usd


class Aggregator:
    """Folds tagged events, in per-job order, into :class:`JobResult` values and a summary.

    ``keep_text=False`` keeps no reply text in memory (a 100k-job batch stays small); the text
    is in the log either way.
    """

    def __init__(self, *, keep_text: bool = True) -> None:
        self.keep_text = keep_text
        self.results: dict[str, JobResult] = {}
        self.kept: dict[str, JobResult] = {}
        """Results a reader took out of :attr:`results` but keeps for the jobs that may still
        end with their outcome (followers of a deduplicated request, see :meth:`result_of`)."""
        self._running: dict[str, _Job] = {}
        self._queued = 0
        self._attempts = 0
        self._retries = 0
        self._failures: dict[ErrorKind, int] = {}
        self._already_done = 0
        self._simulated = 0
        self._warnings = 0
        self._priced_by: dict[str, str] = {}
        self._order: list[str] = []  # job ids in job_queued order: positions for jobs_skipped
        self.skipped: dict[str, str] = {}
        """Announced jobs a ``jobs_skipped`` ended, with its reason (their results are made on
        demand, see :meth:`result`)."""
        self._unannounced: list[tuple[int, int, str]] = []  # skipped positions never announced
        self._skipped_jobs: dict[str, _Job] = {}  # what announced skipped jobs said of themselves

    @property
    def unannounced_skipped(self) -> int:
        """Jobs a ``jobs_skipped`` ended that were never announced: in no other event."""
        return sum(end - start for start, end, _ in self._unannounced)

    def result(self, job_id: str) -> JobResult | None:
        """The job's result, also for a job that a ``jobs_skipped`` ended (made on demand)."""
        found = self.results.get(job_id)
        if found is None and job_id in self.skipped:
            job = self._skipped_jobs.get(job_id)
            if job is None:
                return skipped_result(job_id, self.skipped[job_id])
            given = job.input
            return attrs.evolve(
                skipped_result(job_id, self.skipped[job_id]),
                row=given.row if given is not None else NO_ROW,
                metadata=given.metadata if given is not None else NO_ROW,
                backend=job.backend,
                model=job.model,
            )
        return found

    def unannounced_reason(self, position: int) -> str | None:
        """Why the never-announced job at ``position`` (in job order) was skipped, if it was."""
        for start, end, reason in self._unannounced:
            if start <= position < end:
                return reason
        return None

    def apply_all(self, events: Iterable[Tagged]) -> None:
        """Fold ``events``, in order: the one loop every event goes through (:meth:`apply` too).

        Per event it does one look-up of the job and one of what the event's kind changes
        (:data:`_STEPS`); the live run folds each bus batch here, so the loop holds its names
        in locals rather than looking them up on ``self`` once per event.
        """
        running, steps = self._running, _STEPS
        for tagged in events:
            job_id = tagged.job_id
            event = tagged.event
            if job_id is None:
                if isinstance(event, BatchStarted):
                    self._already_done = event.already_done
                elif isinstance(event, JobsSkipped):
                    self._skip(event)
                continue
            job = running.get(job_id)
            if job is None:
                job = running[job_id] = _Job()
                if type(event) is JobQueued:
                    self._queued += 1
                    self._simulated += event.backend == SIMULATOR
                    self._order.append(job_id)
                    job.model, job.backend = event.model, event.backend
            # One dictionary look-up finds what an event kind changes (most change nothing here).
            step = steps.get(type(event))
            if step is not None:
                step(self, job_id, job, tagged)

    def apply(self, tagged: Tagged) -> None:
        """Fold one event (as :meth:`apply_all` does)."""
        self.apply_all((tagged,))

    def _session_started(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        request_id = tagged.event.request_id  # type: ignore[union-attr]
        if request_id is not None and job.current is not None:
            job.current.request_id = request_id

    def _output(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        """Text, thinking, a tool call or a whole message: the attempt's first output (its time
        to first token, and it is billed), the reply's text, its tool calls."""
        attempt = job.current
        if attempt is None:
            return
        if attempt.first_output is None:
            attempt.first_output = tagged.ts
            attempt.meter.streamed = True
        event = tagged.event
        kind = type(event)
        if kind is TextDelta:
            if attempt.parts is not None:
                attempt.parts.append(event.text)  # type: ignore[union-attr]
        elif kind is ToolCall:
            attempt.tool_calls.append(event)  # type: ignore[arg-type]

    def _text_retracted(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        attempt = job.current
        chars = tagged.event.chars  # type: ignore[union-attr]
        if attempt is not None and attempt.parts is not None and chars > 0:
            text = "".join(attempt.parts)
            attempt.parts[:] = [text[: max(0, len(text) - chars)]]

    def _usage(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        if job.current is not None:
            job.current.meter.add_usage(tagged.event)  # type: ignore[arg-type]

    def _stream_finished(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        event: StreamFinished = tagged.event  # type: ignore[assignment]
        if job.current is not None:
            job.current.meter.finish(event)
        if event.priced_by is not None and job.model is not None:
            self._priced_by[job.model] = event.priced_by

    def _attempt_started(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        job.close_attempt()
        self._attempts += 1
        job.attempts += 1
        if job.first_start is None:
            job.first_start = tagged.ts
        job.current = _Attempt(tagged.ts, [] if self.keep_text else None)

    def _retry_scheduled(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        self._retries += 1
        job.close_attempt()
        job.current = None

    def _output_parsed(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        if job.current is not None:
            job.current.output = tagged.event.value  # type: ignore[union-attr]

    def _job_input(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        job.input = tagged.event  # type: ignore[assignment]

    def _stream_warning(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        self._warnings += 1

    def _job_deduplicated(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        job.leader = tagged.event.leader  # type: ignore[union-attr]

    def _skip(self, event: JobsSkipped) -> None:
        """End every job in the event's ranges as skipped; jobs that already ended keep their
        end (our runner never lists them: a job ends once)."""
        order, running, results, skipped = self._order, self._running, self.results, self.skipped
        announced = len(order)
        for start, end in event.ranges:
            for position in range(max(start, 0), min(end, announced)):
                job_id = order[position]
                if job_id not in results and job_id not in skipped:
                    job = running.pop(job_id, None)
                    if job is not None:
                        self._skipped_jobs[job_id] = job
                    skipped[job_id] = event.reason
            if end > announced:
                self._unannounced.append((max(start, announced), end, event.reason))

    def _finish(self, job_id: str, job: _Job, tagged: Tagged) -> None:
        event = tagged.event
        attempt = job.current
        job.close_attempt()
        del self._running[job_id]
        status: JobStatus
        error_kind: ErrorKind | Literal["cancelled", "skipped"] | None = None
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
        if job.leader is not None and status in ("succeeded", "failed"):
            leader = self.result_of(job.leader)
            if leader is not None:
                self.results[job_id] = shared_result(leader, job_id, job.input, job.backend, job.model)
                return
        output = attempt if status == "succeeded" else None
        finished = attempt.meter.finished if attempt is not None else None
        answer = finished if output is not None else None  # what only a success reports
        given = job.input
        # Positional, in JobResult's field order: passing 23 keywords costs about as much as
        # building the result, and this runs once per job.
        self.results[job_id] = JobResult(
            job_id,
            status,
            job.attempts,
            "".join(output.parts) if output is not None and output.parts is not None else None,
            tuple(output.tool_calls) if output is not None else (),
            job.tokens,
            None if job.cost_unknown else job.cost,
            _elapsed(output.started, output.first_output) if output is not None else None,  # ttft
            _elapsed(job.first_start, tagged.ts),  # duration
            finished.stop_reason if finished is not None else None,
            finished.session_id if finished is not None else None,
            attempt.request_id if attempt is not None else None,
            error_kind,
            error,
            given.row if given is not None else NO_ROW,
            given.metadata if given is not None else NO_ROW,
            job.backend,
            job.model,
            answer.result_text if answer is not None else None,
            answer.permission_denials if answer is not None else (),
            output.output if output is not None else None,
            answer.refusal if answer is not None else None,
            job.leader if status in ("succeeded", "failed") else None,  # deduplicated_from
        )

    def result_of(self, job_id: str) -> JobResult | None:
        """The result of a job that ended, also one a reader took out to :attr:`kept`."""
        found = self.results.get(job_id)
        return found if found is not None else self.kept.get(job_id)

    def summary(self, wall_s: float, *, stopped: str | None = None) -> BatchSummary:
        """The batch so far, as if it ended ``wall_s`` seconds after it started."""
        results = self.results.values()
        counts = {"succeeded": 0, "failed": 0, "cancelled": 0, "skipped": 0}
        spent: list[Tokens] = []
        cost = 0.0
        cost_unknown = 0
        latencies: list[float] = []
        ttfts: list[float] = []
        deduplicated = 0
        counts["skipped"] = len(self.skipped) + self.unannounced_skipped
        for result in results:
            status = result.status
            counts[status] += 1
            if result.deduplicated_from is not None:
                deduplicated += 1  # its leader's tokens, latency and cost count once, there
                continue
            spent.append(result.tokens)
            if result.cost_usd is None:
                cost_unknown += 1
            else:
                cost += result.cost_usd
            if status == "succeeded":
                if result.duration_s is not None:
                    latencies.append(result.duration_s)
                if result.ttft_s is not None:
                    ttfts.append(result.ttft_s)
        tokens = Tokens.sum(spent)
        return summarize(
            counts=counts,
            jobs=self._queued + self.unannounced_skipped,
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
            simulated=self._simulated,
            priced_by=self._priced_by,
            stream_warnings=self._warnings,
            deduplicated=deduplicated,
        )

    @property
    def running(self) -> Mapping[str, object]:
        return self._running


_Step = Callable[[Aggregator, str, _Job, Tagged], None]
_STEPS: dict[type, _Step] = {
    SessionStarted: Aggregator._session_started,
    TextDelta: Aggregator._output,
    ThinkingDelta: Aggregator._output,
    ToolCall: Aggregator._output,
    AssistantMessage: Aggregator._output,
    TextRetracted: Aggregator._text_retracted,
    UsageReported: Aggregator._usage,
    StreamFinished: Aggregator._stream_finished,
    AttemptStarted: Aggregator._attempt_started,
    RetryScheduled: Aggregator._retry_scheduled,
    OutputParsed: Aggregator._output_parsed,
    JobInput: Aggregator._job_input,
    StreamWarning: Aggregator._stream_warning,
    JobSucceeded: Aggregator._finish,
    JobFailed: Aggregator._finish,
    JobCancelled: Aggregator._finish,
    JobSkipped: Aggregator._finish,
    JobDeduplicated: Aggregator._job_deduplicated,
}
"""What each event kind changes in the fold; the kinds missing change nothing."""


def _elapsed(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return end - start


def fold(events: Iterable[Tagged], *, keep_text: bool = True) -> Aggregator:
    """Fold a whole event sequence (e.g. a log) into a fresh :class:`Aggregator`."""
    aggregator = Aggregator(keep_text=keep_text)
    aggregator.apply_all(events)
    return aggregator
