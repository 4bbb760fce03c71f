"""A batch read back from its log: each run's summary, each job's result, every attempt. Pure.

A log holds one or more runs (a resumed run appends a new ``log_header`` and its events).
Each run is folded on its own with the very fold the live run used
(:class:`~orchestrator.record.aggregate.Aggregator`), so a run's summary here is the summary its
``orchestrate --json`` printed, bit for bit:

* ``wall_s`` is the ``ts`` of the run's ``batch_finished`` event, and ``stopped`` the reason
  that event gives; the live runner computes its summary at exactly that instant, after every
  job event.
* A run cut short (a crash, a kill, or a run still going) has no ``batch_finished``: ``wall_s``
  is the ``ts`` of its last event and ``stopped`` is ``"unfinished"``. Jobs that had started
  but not ended count in ``jobs`` only, as they would have at that instant.

Several runs (one log with resumed runs, or several logs given in order) make one combined
report: a job's result is the one from the latest run that gave it one, except that a
``job_skipped`` never hides an earlier real result (a skipped job did not run). The combined
summary (see :func:`combine`) takes the job counts, latencies, time to first token and failure
kinds from those final results, and adds up what every run spent: attempts, retries, tokens,
cost and wall time (the gaps between runs excluded). With a single run it *is* that run's
summary.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from orchestrator import codec
from orchestrator.errors import ErrorKind
from orchestrator.events import (
    AssistantMessage,
    AttemptStarted,
    BatchFinished,
    BatchStarted,
    BatchSummary,
    JobCancelled,
    JobFailed,
    JobInput,
    JobQueued,
    JobSkipped,
    JobsSkipped,
    JobSucceeded,
    RetryScheduled,
    StreamFinished,
    Tagged,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    UsageReported,
)
from orchestrator.record.aggregate import Aggregator
from orchestrator.record.cost import AttemptMeter
from orchestrator.record.log import LogHeader, LogRecord, read_log
from orchestrator.report.merge import combine, failure_groups, final_rows, retry_groups
from orchestrator.report.model import (
    UNFINISHED,
    AttemptOutcome,
    AttemptSpan,
    JobRow,
    Marker,
    Report,
    RunReport,
)

__all__ = [
    "UNFINISHED",
    "AttemptSpan",
    "JobRow",
    "Marker",
    "Report",
    "RunReport",
    "combine",
    "failure_groups",
    "final_rows",
    "fold_runs",
    "pick_run",
    "read_report",
    "retry_groups",
]


@attrs.define
class _Open:
    """An attempt that has started and not yet ended."""

    number: int
    start: float
    meter: AttemptMeter = attrs.Factory(AttemptMeter)
    first_output: float | None = None


class _RunFold:
    """Folds one run's events: the live aggregator plus the per-attempt spans it does not keep."""

    def __init__(self, index: int, source: str, header: LogHeader | None, keep_text: bool) -> None:
        self.index = index
        self.source = source
        self.header = header
        self.aggregator = Aggregator(keep_text=keep_text)  # texts are not part of any summary
        self.queued: dict[str, None] = {}
        self.open: dict[str, _Open] = {}
        self.spans: dict[str, list[AttemptSpan]] = {}
        self.markers: list[Marker] = []
        self.finished: tuple[float, BatchSummary] | None = None
        self.started = False
        self.last_ts = 0.0
        self.story_skipped: set[str] = set()
        self.inputs: dict[str, JobInput] | None = {} if keep_text else None

    def apply(self, tagged: Tagged) -> None:
        self.aggregator.apply(tagged)
        if tagged.ts > self.last_ts:
            self.last_ts = tagged.ts
        event, job = tagged.event, tagged.job_id
        if job is None:
            if isinstance(event, BatchFinished):
                self.finished = (tagged.ts, event.summary)
            elif isinstance(event, BatchStarted):
                self.started = True
            elif "limiter" in event.kind:
                self.markers.append(Marker(self.index, tagged.ts, event.kind, _fields(event)))
            return
        current = self.open.get(job)
        match event:
            case JobQueued():
                self.queued[job] = None
            case AttemptStarted():
                if current is not None:  # never written by our runner; close it rather than lose it
                    self._close(job, tagged.ts, "retried")
                self.queued.setdefault(job, None)
                self.open[job] = _Open(tagged.attempt, tagged.ts)
            case TextDelta() | ThinkingDelta() | ToolCall() | AssistantMessage() if current is not None:
                if current.first_output is None:
                    current.first_output = tagged.ts
                    current.meter.streamed = True
            case UsageReported() if current is not None:
                current.meter.add_usage(event)
            case StreamFinished() if current is not None:
                current.meter.finish(event)
            case RetryScheduled():
                self._close(job, tagged.ts, "retried", event.error_kind, event.message, event.delay_s)
            case JobSucceeded():
                self._close(job, tagged.ts, "succeeded")
            case JobFailed():
                self._close(job, tagged.ts, "failed", event.error_kind, event.message)
            case JobCancelled():
                self._close(job, tagged.ts, "cancelled", "cancelled", event.reason)
            case JobSkipped():
                self.queued.setdefault(job, None)
            case JobInput() if self.inputs is not None:
                self.inputs[job] = event
            case _:
                pass

    def _close(
        self,
        job: str,
        ts: float,
        outcome: AttemptOutcome,
        error_kind: ErrorKind | Literal["cancelled"] | None = None,
        error: str | None = None,
        delay: float | None = None,
    ) -> None:
        current = self.open.pop(job, None)
        if current is None:
            return
        spent = current.meter.cost()  # the rule the summary applies to the same attempt
        self.spans.setdefault(job, []).append(
            AttemptSpan(
                job_id=job,
                run=self.index,
                number=current.number,
                start=current.start,
                end=ts,
                outcome=outcome,
                tokens=spent.tokens,
                cost_usd=spent.cost_usd,
                first_output=current.first_output,
                error_kind=error_kind,
                error=error,
                retry_delay_s=delay,
            )
        )

    def result(self) -> RunReport:
        for job in list(self.open):
            self._close(job, self.last_ts, "unfinished")
        if self.finished is not None:
            wall, logged = self.finished
            summary = self.aggregator.summary(wall, stopped=logged.stopped)
        else:
            wall, logged = self.last_ts, None
            summary = self.aggregator.summary(wall, stopped=UNFINISHED)
        results = dict(self.aggregator.results)
        for job in self.aggregator.skipped:
            found = self.aggregator.result(job)
            assert found is not None
            results[job] = found
        return RunReport(
            index=self.index,
            source=self.source,
            header=self.header,
            summary=summary,
            logged_summary=logged,
            results=results,
            unannounced_skipped=self.aggregator.unannounced_skipped,
            queued=tuple(self.queued),
            attempts={job: tuple(spans) for job, spans in self.spans.items()},
            markers=tuple(self.markers),
            end_ts=wall,
            inputs=self.inputs or {},
        )


def fold_runs(
    records: Iterable[tuple[str, LogRecord]], *, story_job: str | None = None, keep_text: bool = False
) -> Report:
    """Fold log records (each with the name of the log it came from) into a :class:`Report`.

    A run starts at each ``log_header``, at the start of each log, and at a second
    ``batch_started`` without a header between (logs joined by hand). ``story_job`` keeps every
    event of that job for :attr:`Report.story`; ``keep_text`` keeps each result's final text and
    each job's rendered request (:attr:`RunReport.inputs`).
    """
    folds: list[_RunFold] = []
    story: list[tuple[int, Tagged]] = []
    current: _RunFold | None = None
    source: str | None = None
    for name, record in records:
        tagged = record.tagged
        new_source = name != source
        source = name
        new_run = (
            current is None
            or new_source
            or record.header is not None
            or (tagged is not None and isinstance(tagged.event, BatchStarted) and current.started)
        )
        if new_run:
            if current is not None and not _empty(current):
                folds.append(current)
            current = _RunFold(len(folds) + 1, name, record.header, keep_text)
        assert current is not None
        if tagged is not None:
            current.apply(tagged)
            if story_job is not None:
                if tagged.job_id == story_job:
                    story.append((current.index, tagged))
                elif isinstance(tagged.event, JobsSkipped):
                    story.extend(_skip_in_story(current, tagged, story_job))
    if current is not None and not _empty(current):
        folds.append(current)
    runs = tuple(fold.result() for fold in folds)
    jobs = final_rows(runs)
    return Report(runs=runs, jobs=jobs, summary=combine(runs, jobs), story=tuple(story))


def _skip_in_story(fold: _RunFold, tagged: Tagged, job: str) -> list[tuple[int, Tagged]]:
    """The story's own ``job_skipped`` line when a ``jobs_skipped`` just ended ``job``."""
    assert isinstance(tagged.event, JobsSkipped)
    if fold.aggregator.skipped.get(job) != tagged.event.reason or job in fold.story_skipped:
        return []
    fold.story_skipped.add(job)
    return [(fold.index, Tagged(job, 0, tagged.seq, tagged.ts, JobSkipped(reason=tagged.event.reason)))]


def _fields(event: Any) -> dict[str, Any]:
    """An event's fields; kinds this module does not know by name (limiter events) included."""
    try:
        return {k: v for k, v in codec.event_to_dict(event).items() if k != "kind"}
    except KeyError:  # a kind the codec has no generated function for
        return dict(codec.to_jsonable(event)) if attrs.has(type(event)) else {}


def _empty(fold: _RunFold) -> bool:
    return fold.header is None and not fold.started and not fold.queued and fold.finished is None


def read_report(
    paths: Sequence[str | Path], *, story_job: str | None = None, keep_text: bool = False
) -> Report:
    """Read and fold the logs, in the order given. Raises OSError or :class:`~.log.LogError`.

    The garbage collector is paused while it reads (and restored after): the fold makes objects
    by the million, none in reference cycles, and keeps one row per job, so collections only
    cost time (an eighth of it on a big log)."""

    def records() -> Iterable[tuple[str, LogRecord]]:
        for path in paths:
            for record in read_log(path):
                yield str(path), record

    collecting = gc.isenabled()
    gc.disable()
    try:
        return fold_runs(records(), story_job=story_job, keep_text=keep_text)
    finally:
        if collecting:
            gc.enable()


def pick_run(report: Report, number: int) -> Report | None:
    """Run ``number`` of the report alone (1 = first, -1 = last); None when there is no such run."""
    runs = report.runs
    index = number - 1 if number > 0 else len(runs) + number
    if number == 0 or not 0 <= index < len(runs):
        return None
    run = (runs[index],)
    rows = final_rows(run)
    story = tuple(item for item in report.story if item[0] == run[0].index)
    return Report(runs=run, jobs=rows, summary=combine(run, rows), story=story)
