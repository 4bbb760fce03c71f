"""Several runs of a batch made one: each job's final row and the combined summary. Pure.

The rule (also in :mod:`orchestrator.report.fold`): a job's result is the one from the latest run that gave it
one, except that a ``job_skipped`` never hides an earlier real result (a skipped job did not
run); a job that never ended in any run shows what it did, as ``unfinished``. The combined
summary takes job counts, latencies, time to first token and failure kinds from those rows, and
adds up what every run spent: attempts, retries, tokens, cost and wall time. Jobs a run's
``jobs_skipped`` ended before they were announced have no row (no name in the log); the last
run's count as skipped jobs in the summary (an earlier run's are the later run's jobs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from orchestrator.errors import ErrorKind
from orchestrator.events import BatchSummary, Tokens
from orchestrator.record.job_result import JobResult
from orchestrator.record.summary import summarize
from orchestrator.report.model import UNFINISHED, AttemptSpan, JobRow, RunReport


def final_rows(runs: Sequence[RunReport]) -> dict[str, JobRow]:
    """Every job's final row, in the order jobs were first queued (rule: module docstring)."""
    rows: dict[str, JobRow] = {}
    for run in runs:
        for job in run.queued:
            earlier = rows.get(job)
            result = run.results.get(job)
            if result is not None:
                if result.status == "skipped" and earlier is not None and earlier.status != "skipped":
                    continue
                rows[job] = _row_from_result(run.index, result)
            elif earlier is None or earlier.status == "skipped":
                rows[job] = _row_from_spans(job, run.index, run.attempts.get(job, ()))
    return rows


def _row_from_result(run: int, result: JobResult) -> JobRow:
    return JobRow(
        job_id=result.job_id,
        status=result.status,
        run=run,
        attempts=result.attempts,
        tokens=result.tokens,
        cost_usd=result.cost_usd,
        ttft_s=result.ttft_s,
        duration_s=result.duration_s,
        error_kind=result.error_kind,
        error=result.error,
        row=result.row,
        metadata=result.metadata,
        deduplicated_from=result.deduplicated_from,
    )


def _row_from_spans(job: str, run: int, spans: Sequence[AttemptSpan]) -> JobRow:
    tokens = Tokens()
    for span in spans:
        tokens = tokens + span.tokens
    return JobRow(
        job_id=job,
        status=UNFINISHED,
        run=run,
        attempts=len(spans),
        tokens=tokens,
        cost_usd=None,
        ttft_s=None,
        duration_s=spans[-1].end - spans[0].start if spans else None,
        error_kind=UNFINISHED,
        error="the log ends before this job did",
    )


def combine(runs: Sequence[RunReport], rows: Mapping[str, JobRow]) -> BatchSummary:
    """The summary of several runs taken together (rule: module docstring); one run's own
    summary when there is only one, and an empty summary when there is none."""
    if len(runs) == 1:
        return runs[0].summary
    if not runs:
        return BatchSummary()
    counts = {"succeeded": 0, "failed": 0, "cancelled": 0, "skipped": 0}
    failures: dict[ErrorKind, int] = {}
    latencies: list[float] = []
    ttfts: list[float] = []
    deduplicated = 0
    for row in rows.values():
        if row.status in counts:
            counts[row.status] += 1
        if row.status == "failed" and isinstance(row.error_kind, ErrorKind):
            failures[row.error_kind] = failures.get(row.error_kind, 0) + 1
        if row.deduplicated_from is not None:
            deduplicated += 1  # its times are its leader's, counted there (as in one run's summary)
        elif row.ok:
            if row.duration_s is not None:
                latencies.append(row.duration_s)
            if row.ttft_s is not None:
                ttfts.append(row.ttft_s)
    # Jobs a run skipped before announcing them have no name to match on. A later run of the
    # same batch reruns every job that did not succeed, so only the last run's stand alone.
    unnamed = runs[-1].unannounced_skipped
    counts["skipped"] += unnamed
    tokens = Tokens()
    for run in runs:
        tokens = tokens + run.summary.tokens
    cost_unknown = {job for run in runs for job, result in run.results.items() if result.cost_usd is None}
    return summarize(
        counts=counts,
        jobs=len(rows) + unnamed,
        attempts=sum(run.summary.attempts for run in runs),
        retries=sum(run.summary.retries for run in runs),
        tokens=tokens,
        cost=sum(run.summary.cost_usd for run in runs),
        cost_unknown=len(cost_unknown),
        wall_s=sum(run.summary.wall_s for run in runs),
        latencies=latencies,
        ttfts=ttfts,
        failures=failures,
        stopped=runs[-1].summary.stopped,
        already_done=runs[0].summary.already_done,
        # a job run on the simulator in several runs is one simulated job
        simulated=min(len(rows), sum(run.summary.simulated_jobs for run in runs)),
        stream_warnings=sum(run.summary.stream_warnings for run in runs),
        deduplicated=deduplicated,
        priced_by={model: source for run in runs for model, source in run.summary.priced_by.items()},
    )


def failure_groups(rows: Iterable[JobRow]) -> list[tuple[str, str, int]]:
    """(error kind, message, jobs) for every job that did not succeed, most frequent first."""
    groups: dict[tuple[str, str], int] = {}
    for row in rows:
        if not row.ok:
            key = (row.error_kind or row.status, row.error or "")
            groups[key] = groups.get(key, 0) + 1
    return sorted(((k, m, n) for (k, m), n in groups.items()), key=lambda g: (-g[2], g[0], g[1]))


def retry_groups(runs: Iterable[RunReport]) -> list[tuple[str, int]]:
    """(error kind, retries) over every retried attempt of every run, most frequent first."""
    groups: dict[str, int] = {}
    for run in runs:
        for spans in run.attempts.values():
            for span in spans:
                if span.outcome == "retried":
                    kind = span.error_kind or "?"
                    groups[kind] = groups.get(kind, 0) + 1
    return sorted(groups.items(), key=lambda g: (-g[1], g[0]))
