"""The results table read back from logs alone: ``orchestrate export`` and the files a run writes.

Runs merge as ``report`` merges them (:mod:`orchestrator.report.merge`): one row per job, its
final result, in the order jobs were first queued. A job whose log ends before it did (a
crash) has no row until a resumed run ends it; jobs a stop skipped before they were announced
have no id in the log, and no row.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from pathlib import Path

from orchestrator.record.results import Row, result_row
from orchestrator.report.fold import Report, pick_run, read_report


def report_rows(report: Report, *, failed: bool = False, leave_out: Container[str] = ()) -> list[Row]:
    """The results rows of a report's final jobs; ``failed``: only jobs that did not succeed;
    ``leave_out``: ids to leave out (a resumed run's own jobs)."""
    runs = {run.index: run for run in report.runs}
    rows: list[Row] = []
    for job_id, job in report.jobs.items():
        if (failed and job.ok) or job_id in leave_out:
            continue
        result = runs[job.run].results.get(job_id)
        if result is not None:  # None: the log ends before the job did
            rows.append(result_row(result))
    return rows


def log_rows(
    paths: Sequence[str | Path],
    *,
    run: int | None = None,
    failed: bool = False,
    leave_out: Container[str] = (),
) -> list[Row]:
    """The results rows of the logs (in the order given), or of run ``run`` alone.

    Raises OSError or :class:`~orchestrator.record.log.LogError` for a log that cannot be read,
    LookupError when there is no run ``run``.
    """
    report = read_report(paths, keep_text=True)
    if run is not None:
        picked = pick_run(report, run)
        if picked is None:
            raise LookupError(f"no run {run} (the log has {len(report.runs)})")
        report = picked
    return report_rows(report, failed=failed, leave_out=leave_out)
