"""`orchestrate report`: the summary recomputed from a log equals the live one, byte for byte;
torn, cut-short and appended logs; the job table, --failed, --job and the one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import attrs
import orjson
import pytest

from orchestrator import codec
from orchestrator.cli.report import main as report_main
from orchestrator.config.jobfile import Overrides, load_job_file
from orchestrator.events import (
    AttemptStarted,
    BatchFinished,
    JobQueued,
    JobSkipped,
    JobSucceeded,
    StreamFinished,
    Tagged,
    TextDelta,
    Tokens,
)
from orchestrator.record.aggregate import fold
from orchestrator.record.log import LogRecord, read_log
from orchestrator.report.fold import UNFINISHED, fold_runs, read_report
from tests.helpers import make_spec, run_virtual

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "jobs"


def orchestrate(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env, capture_output=True, timeout=120
    )


def virtual_log(job_file: str, log: Path) -> Path:
    """Run a job file on the virtual clock (fast, exact) writing ``log``."""
    spec = load_job_file(JOBS / job_file, Overrides(log=str(log)))
    run_virtual(spec, keep_text=False)
    return log


@pytest.mark.slow
@pytest.mark.parametrize("job_file", ["batch.toml", "faults.toml"])
def test_report_json_is_byte_for_byte_the_live_json(tmp_path: Path, job_file: str) -> None:
    log = tmp_path / "run.jsonl"
    live = orchestrate(str(JOBS / job_file), "--log", str(log), "--json", cwd=tmp_path)
    assert live.returncode in (0, 1), live.stderr
    report = orchestrate("report", str(log), "--json", cwd=tmp_path)
    assert report.stdout == live.stdout
    assert report.returncode == live.returncode
    assert report.stderr == b""


def test_a_log_cut_short_with_a_torn_last_line_reports_what_had_happened(tmp_path: Path) -> None:
    full = virtual_log("faults.toml", tmp_path / "full.jsonl").read_bytes()
    lines = full.split(b"\n")
    cut = b"\n".join(lines[: len(lines) // 2]) + b"\n" + lines[len(lines) // 2][:17]  # a torn line
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(cut)
    events = [r.tagged for r in read_log(torn) if r.tagged is not None]
    expected = fold(events).summary(events[-1].ts, stopped=UNFINISHED)

    report = read_report([torn])

    assert report.summary == expected
    assert report.summary.stopped == "unfinished" and report.summary.wall_s == events[-1].ts
    unfinished = [row for row in report.jobs.values() if row.status == UNFINISHED]
    assert unfinished and len(report.jobs) == 7
    assert report.runs[0].logged_summary is None


def test_report_cli_on_a_torn_log_prints_unfinished_jobs_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = virtual_log("faults.toml", tmp_path / "run.jsonl").read_bytes()
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(data[: len(data) // 2])
    assert report_main([str(torn)]) == 1
    out = capsys.readouterr().out
    assert "stopped: unfinished" in out and "the log ends before this job did" in out


def run_twice(tmp_path: Path) -> Path:
    """One log, two runs: the first has a job fail for good, the second reruns it and succeeds."""
    log = tmp_path / "two.jsonl"
    common = {"seed": 5, "log": str(log), "retry": {"max_attempts": 2, "base_delay": 0.1}}
    first = make_spec(
        [
            {"id": "a", "prompt": "a", "sim": {"faults": ["fatal"]}},
            {"id": "b", "prompt": "b"},
            {"id": "c", "prompt": "c", "sim": {"faults": ["overload"]}},
        ],
        **common,
    )
    run_virtual(first)
    second = make_spec([{"id": "a", "prompt": "a"}], **common)
    run_virtual(second)
    return log


def test_two_runs_in_one_log_combine_with_the_later_result_winning(tmp_path: Path) -> None:
    log = run_twice(tmp_path)
    report = read_report([log])
    run1, run2 = report.runs

    assert [r.header is not None for r in report.runs] == [True, True]
    assert run1.summary == run1.logged_summary and run2.summary == run2.logged_summary
    assert report.jobs["a"].status == "succeeded" and report.jobs["a"].run == 2
    assert report.jobs["b"].run == 1
    s = report.summary
    assert (s.jobs, s.succeeded, s.failed, s.failures) == (3, 3, 0, {})
    assert s.attempts == run1.summary.attempts + run2.summary.attempts
    assert s.retries == run1.summary.retries + run2.summary.retries
    assert s.tokens == run1.summary.tokens + run2.summary.tokens
    assert s.wall_s == run1.summary.wall_s + run2.summary.wall_s
    assert s.cost_usd == round(run1.summary.cost_usd + run2.summary.cost_usd, 9)


def test_run_option_reports_one_run_exactly_as_it_was_printed(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    log = run_twice(tmp_path)
    logged = [
        r.tagged.event.summary
        for r in read_log(log)
        if r.tagged is not None and isinstance(r.tagged.event, BatchFinished)
    ]
    for number, summary in ((1, logged[0]), (2, logged[1]), (-1, logged[1])):
        report_main([str(log), "--run", str(number), "--json"])
        assert capsysbinary.readouterr().out == codec.summary_json(summary)
    assert report_main([str(log), "--run", "3"]) == 2


def tag(job: str, attempt: int, seq: int, ts: float, event: object) -> LogRecord:
    return LogRecord(seq, tagged=Tagged(job, attempt, seq, ts, event))  # type: ignore[arg-type]


def test_a_later_skip_never_hides_an_earlier_result() -> None:
    run1 = [
        tag("x", 0, 0, 0.0, JobQueued(backend="sim", model=None, content_hash="h")),
        tag("x", 1, 1, 0.1, AttemptStarted(backend="sim")),
        tag("x", 1, 2, 0.5, StreamFinished(tokens=Tokens(1, 2), cost_usd=0.01)),
        tag("x", 1, 3, 0.6, JobSucceeded(attempts=1)),
    ]
    run2 = [
        tag("x", 0, 0, 0.0, JobQueued(backend="sim", model=None, content_hash="h")),
        tag("x", 0, 1, 0.1, JobSkipped(reason="deadline")),
    ]
    report = fold_runs([("one.jsonl", r) for r in run1] + [("two.jsonl", r) for r in run2])
    assert len(report.runs) == 2
    assert report.jobs["x"].status == "succeeded" and report.jobs["x"].run == 1


def test_failed_lists_only_jobs_that_did_not_succeed_with_grouped_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = virtual_log("faults.toml", tmp_path / "run.jsonl")
    assert report_main([str(log), "--failed"]) == 1
    out = capsys.readouterr().out
    assert "bad-request" in out and "400 bad request (simulated)" in out
    assert "failure reasons" in out and "jobs (1)" in out
    for job in ("clean", "rate-limited", "stalled", "server-errors"):
        assert job not in out


def test_the_full_report_has_a_row_per_job_and_retry_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = virtual_log("faults.toml", tmp_path / "run.jsonl")
    report_main([str(log)])
    out = capsys.readouterr().out
    assert "jobs (7)" in out and "7 (6 succeeded, 1 failed)" in out
    assert "rate_limited x2" in out and "timeout_idle x1" in out
    for job in ("clean", "rate-limited", "overloaded", "dropped", "stalled", "server-errors", "bad-request"):
        assert job in out


def test_job_story_shows_each_attempt_retry_reason_and_delay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = virtual_log("faults.toml", tmp_path / "run.jsonl")
    report_main([str(log), "--job", "rate-limited"])
    out = capsys.readouterr().out
    assert out.count("attempt 1 (sim)") == 1 and "attempt 3 (sim)" in out
    assert out.count("rate_limited: 429 rate limited (simulated); retrying in 0.500s") == 2
    assert "succeeded after 3 attempt(s)" in out
    assert "clean" not in out


def test_job_story_shows_tool_calls_results_and_the_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = virtual_log("sim.toml", tmp_path / "run.jsonl")
    report_main([str(log), "--job", "tools"])
    out = capsys.readouterr().out
    assert 'tool call lookup [call_tools_0] {"query":"Look something up, then answer.","n":0}' in out
    assert "tool result [call_tools_1]: result 1" in out
    text = "".join(
        r.tagged.event.text
        for r in read_log(log)
        if r.tagged is not None and r.tagged.job_id == "tools" and isinstance(r.tagged.event, TextDelta)
    )
    assert f"text: {text}" in out


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "No such file or directory"),
        (b"hello, this is not a log\nsecond line\n", [], "not a log written by orchestrate"),
        (b"", [], "no runs in this log"),
        (b'{"kind": "wrong", "job": null}\n{"kind": "x"}\n', [], "line 1"),
        ("faults", ["--job", "nope"], "no job 'nope' in the log"),
        ("faults", ["--json", "--job", "clean"], "pick one"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | str | None,
    args: list[str],
    message: str,
) -> None:
    log = tmp_path / "log.jsonl"
    if content == "faults":
        virtual_log("faults.toml", log)
    elif isinstance(content, bytes):
        log.write_bytes(content)
    assert report_main([str(log), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_directory_is_not_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_an_edited_summary_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = virtual_log("sim.toml", tmp_path / "run.jsonl")
    lines = log.read_bytes().splitlines()
    last = orjson.loads(lines[-1])
    last["summary"]["succeeded"] = 99
    log.write_bytes(b"\n".join([*lines[:-1], orjson.dumps(last)]) + b"\n")
    report_main([str(log), "--json"])
    assert "differs from the one recomputed" in capsys.readouterr().err


def test_summary_of_one_run_is_the_aggregators_own(tmp_path: Path) -> None:
    log = virtual_log("faults.toml", tmp_path / "run.jsonl")
    report = read_report([log])
    assert attrs.asdict(report.summary) == attrs.asdict(report.runs[0].logged_summary)  # type: ignore[arg-type]


def test_job_story_and_result_show_the_row_metadata_and_rendered_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rows.csv").write_text("review_id,text,label\nr1,Great [b]x[/b],pos\n")
    (tmp_path / "jobs.toml").write_text(
        'data_file = "rows.csv"\n[defaults]\nprompt_template = "Classify: {text}"\n'
        'system_template = "Labels: pos, neg"\nid_column = "review_id"\nmetadata = { split = "test" }\n'
    )
    spec = attrs.evolve(load_job_file(tmp_path / "jobs.toml"), log=str(tmp_path / "run.jsonl"))
    run_virtual(spec)
    report = read_report([tmp_path / "run.jsonl"])
    assert dict(report.jobs["r1"].row) == {"review_id": "r1", "text": "Great [b]x[/b]", "label": "pos"}
    assert dict(report.jobs["r1"].metadata) == {"split": "test"}
    report_main([str(tmp_path / "run.jsonl"), "--job", "r1"])
    out = capsys.readouterr().out
    assert 'row: {"review_id":"r1","text":"Great [b]x[/b]","label":"pos"}' in out
    assert 'metadata: {"split":"test"}' in out
    assert "system: Labels: pos, neg" in out and "prompt: Classify: Great [b]x[/b]" in out
