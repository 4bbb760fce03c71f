"""What a report is made of: a job's row, an attempt's span, a run and the whole report. Values only.

:mod:`orchestrator.report.fold` builds them from a log, :mod:`orchestrator.report.merge`
makes several runs one; the views (:mod:`orchestrator.report.story`,
:mod:`orchestrator.report.html`, the ``report`` command) read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from orchestrator.errors import ErrorKind
from orchestrator.events import BatchSummary, JobInput, Tagged, Tokens
from orchestrator.record.job_result import JobResult
from orchestrator.record.log import LogHeader
from orchestrator.spec import NO_ROW

UNFINISHED: Final = "unfinished"
"""``stopped`` of a run whose log ends without ``batch_finished``; status of a job without an end."""


@attrs.frozen
class JobRow:
    """A job as the report shows it: its final result (or, if it never ended, what it did)."""

    job_id: str
    status: str
    run: int
    attempts: int
    tokens: Tokens
    cost_usd: float | None
    ttft_s: float | None
    duration_s: float | None
    error_kind: ErrorKind | Literal["cancelled", "skipped", "unfinished"] | None = None
    """Why a failed job failed; the status of a job that was stopped, not run or never ended."""
    error: str | None = None
    row: Mapping[str, Any] = NO_ROW
    """The data-file row the job came from (the columns kept)."""
    metadata: Mapping[str, Any] = NO_ROW
    deduplicated_from: str | None = None
    """The job whose identical request answered this one (see ``JobResult.deduplicated_from``)."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


AttemptOutcome = Literal["succeeded", "retried", "failed", "cancelled", "unfinished"]


@attrs.frozen
class AttemptSpan:
    """One attempt of one job, from ``attempt_started`` to whatever ended it.

    Times are seconds on the run's own clock. ``retry_delay_s`` is the backoff scheduled after
    a retried attempt; ``first_output`` the ``ts`` of its first text, thinking or tool call.
    """

    job_id: str
    run: int
    number: int
    start: float
    end: float
    outcome: AttemptOutcome
    tokens: Tokens = attrs.field(factory=Tokens)
    cost_usd: float | None = None
    first_output: float | None = None
    error_kind: ErrorKind | Literal["cancelled"] | None = None
    error: str | None = None
    retry_delay_s: float | None = None

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_output is None else self.first_output - self.start


@attrs.frozen
class Marker:
    """A batch-level event worth marking on a time axis (limiter changes): its ts and fields."""

    run: int
    ts: float
    kind: str
    fields: Mapping[str, Any]


@attrs.frozen
class RunReport:
    """One run of the log, folded.

    ``summary`` is recomputed from the events; ``logged_summary`` is the one the run wrote into
    its ``batch_finished`` event (None when cut short). They are equal unless the log was edited.
    """

    index: int
    source: str
    header: LogHeader | None
    summary: BatchSummary
    logged_summary: BatchSummary | None
    results: Mapping[str, JobResult]
    queued: tuple[str, ...]
    attempts: Mapping[str, tuple[AttemptSpan, ...]]
    markers: tuple[Marker, ...]
    end_ts: float
    unannounced_skipped: int = 0
    """Jobs this run skipped before announcing them: counted in its summary, named nowhere."""
    inputs: Mapping[str, JobInput] = attrs.field(factory=dict)
    """Each job's ``job_input`` (its rendered request), when the log was read keeping texts."""

    @property
    def finished(self) -> bool:
        return self.logged_summary is not None


@attrs.frozen
class Report:
    """Everything read back from one or more logs: the runs in order, the final row of every
    job (in the order jobs were first queued), the summary, and (when asked) one job's events."""

    runs: tuple[RunReport, ...]
    jobs: Mapping[str, JobRow]
    summary: BatchSummary
    story: tuple[tuple[int, Tagged], ...] = ()
