"""A stopped batch's never-started jobs end in one ``jobs_skipped``: report, story and resume
read it as if each job had its own ``job_skipped``."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest

from orchestrator.cli import report as report_cli
from orchestrator.cli.display import Progress, print_summary
from orchestrator.cli.report import main as report_main
from orchestrator.cli.tail import describe
from orchestrator.events import AttemptStarted, BatchStarted, JobsSkipped, Tagged, Tokens
from orchestrator.record.aggregate import JobResult
from orchestrator.record.log import read_log
from orchestrator.record.resume import plan
from orchestrator.report.fold import read_report
from orchestrator.report.model import JobRow
from orchestrator.run.batch import BatchResult
from orchestrator.run.control import RunControl
from orchestrator.spec import BatchSpec
from orchestrator.visible import visible
from tests.helpers import Recorder, make_spec, run_virtual

IDS = [f"q{i}" for i in range(1500)]


def batch(log: Path) -> BatchSpec:
    return make_spec(
        [{"id": job, "prompt": job} for job in IDS],
        concurrency=3,  # three announced at once, one of them runs: announced jobs that never start
        backends={"sim": {"concurrency": 1}},
        log=str(log),
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 2},
    )


def stopped_run(spec: BatchSpec) -> BatchResult:
    """Run ``spec`` and stop it as soon as its first attempt starts (announcing still under way)."""
    control = RunControl()

    class StopAtFirstAttempt(Recorder):
        async def deliver(self, events: Sequence[Tagged]) -> None:
            if any(isinstance(t.event, AttemptStarted) for t in events):
                control.cancel("interrupted")

    return run_virtual(spec, subscribers=[StopAtFirstAttempt()], control=control, keep_text=False)


def test_report_of_a_stopped_run_is_the_live_summary_with_a_row_per_named_job(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    live = stopped_run(batch(log))
    events = [r.tagged for r in read_log(log) if r.tagged is not None]
    bulk = [t.event for t in events if isinstance(t.event, JobsSkipped)]
    assert len(bulk) == 1 and bulk[0].count == live.summary.skipped
    announced = [t.job_id for t in events if t.event.kind == "job_queued"]
    assert len(announced) < len(IDS)  # some jobs appear in the log only in jobs_skipped

    report = read_report([log])

    assert report.summary == live.summary == report.runs[0].logged_summary
    assert report.summary.jobs == len(IDS) and report.summary.cancelled == report.summary.attempts >= 1
    assert list(report.jobs) == announced
    assert {job: row.status for job, row in report.jobs.items()} == {
        job: live.jobs[job].status for job in announced
    }
    assert report.runs[0].unannounced_skipped == len(IDS) - len(announced)


def test_table_story_and_json_read_the_bulk_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "run.jsonl"
    stopped_run(batch(log))
    skipped = next(job for job, row in read_report([log]).jobs.items() if row.status == "skipped")
    assert report_main([str(log)]) == 1
    out = capsys.readouterr().out
    assert "skipped before they were announced" in out
    assert report_main([str(log), "--job", skipped]) == 1
    assert "skipped: interrupted" in capsys.readouterr().out


def test_resume_after_a_stop_runs_exactly_the_jobs_that_did_not_end_well(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    spec = batch(log)
    first = stopped_run(spec)
    resumed = plan(spec, str(log))
    assert resumed.already_done == first.summary.succeeded
    assert len(resumed.spec.jobs) == len(IDS) - first.summary.succeeded
    run_virtual(resumed.spec, keep_text=False)

    report = read_report([log])

    assert report.summary.jobs == len(IDS) and report.summary.succeeded == len(IDS)
    assert report.summary.skipped == 0 and report.summary.ok


def test_a_long_job_table_prints_as_plain_aligned_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "run.jsonl"
    stopped_run(batch(log))
    monkeypatch.setattr(report_cli, "PLAIN_ROWS", 1)
    report_main([str(log)])
    out = capsys.readouterr().out
    lines = out[out.index("\njobs (") + 1 :].splitlines()
    assert lines[1].split() == [
        "job",
        "status",
        "attempts",
        "tokens",
        "in/out",
        "cost",
        "ttft",
        "duration",
        "error",
    ]
    assert set(lines[2]) == {"-"} and "│" not in "".join(lines[3:])
    assert lines[3].split()[:3] == ["q0", "cancelled", "1"]
    assert lines[-2].split()[:3] == ["q1499", "skipped", "0"] or "announced" in lines[-1]
    assert len({line.index("cancelled") for line in lines[3:] if "cancelled" in line}) == 1  # aligned


def test_plain_lines_show_control_characters_as_escapes() -> None:
    row = JobRow(
        "ok \x1b[2J\x07 done", "failed", 0, 1, Tokens(), None, None, None, "bad_request", "no\x1b]0;t\x07"
    )
    cells = report_cli._cells(row, show_run=False)
    assert "\x1b" not in "".join(cells) and "\x07" not in "".join(cells)
    assert cells[0] == visible("ok \x1b[2J\x07 done") and cells[-1] == visible("bad_request: no\x1b]0;t\x07")


async def test_progress_counts_every_job_a_bulk_skip_ends() -> None:
    progress = Progress()
    ends = [
        Tagged(None, 0, 0, 0.0, BatchStarted(run_id="r", jobs=10, started_at="t")),
        Tagged(None, 0, 1, 1.0, JobsSkipped(reason="interrupted", count=7, ranges=((3, 10),))),
    ]
    await progress.deliver(ends)
    assert progress.done == 7 and progress.total == 10


def test_tail_says_how_many_jobs_never_started() -> None:
    event = JobsSkipped(reason="terminated", count=99_997, ranges=((3, 100_000),))
    assert describe(event) == "99997 job(s) never started: terminated"


def test_the_summary_of_a_big_stopped_batch_walks_only_the_rows_it_shows() -> None:
    live = stopped_run(attrs.evolve(batch(Path("unused.jsonl")), log=None))
    drawn = 0

    def results() -> Iterator[JobResult]:
        nonlocal drawn
        for result in live.jobs.values():
            drawn += 1
            yield result

    out = io.StringIO()
    print_summary(live.summary, results(), stream=out, log=None)
    assert drawn <= 40  # the cancelled jobs and the first skipped ones: not 1,500 results
    assert f"{live.summary.jobs - live.summary.succeeded - 20} more" in out.getvalue()
