"""Logs written before the error vocabulary was closed: their retired kind names read back as the
kinds they became, an unknown name reads as ``unknown``, and report and resume both take them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator import codec, run_batch
from orchestrator.cli.report import main as report_main
from orchestrator.errors import ErrorKind
from orchestrator.events import BatchSummary, JobFailed, RetryScheduled
from orchestrator.record.lines import records_of
from orchestrator.record.log import read_log
from orchestrator.report.fold import read_report
from tests.helpers import make_spec, run_virtual

QUERIES: list[Any] = [
    {"id": "too-long", "prompt": "a", "sim": {"faults": ["fatal"]}},
    {"id": "odd", "prompt": "b", "sim": {"faults": ["fatal"]}},
    {"id": "flaky", "prompt": "c", "sim": {"faults": ["server_error", "ok"]}},
]
# What an earlier version wrote, and in one case what no version wrote.
OLD_NAMES = {("too-long", "job_failed"): "context_overflow", ("odd", "job_failed"): "some_future_kind"}
OLD_RETRY = "transient"


def old_log(tmp_path: Path) -> Path:
    """A run's log as an earlier version would have written it: a sim run whose kinds are then
    renamed to retired names, in the events and in the logged summary alike."""
    log = tmp_path / "old.jsonl"
    run_virtual(make_spec(QUERIES, seed=1, log=str(log), retry={"max_attempts": 2, "base_delay": 0}))
    lines = []
    for raw in log.read_bytes().splitlines():
        line = orjson.loads(raw)
        for kind, fields in records_of(line):  # each record of the line, its fields changed in place
            key = (line.get("job"), kind)
            if key in OLD_NAMES:
                fields["error_kind"] = OLD_NAMES[key]  # type: ignore[index]
            elif key == ("flaky", "retry_scheduled"):
                fields["error_kind"] = OLD_RETRY  # type: ignore[index]
            elif kind == "batch_finished":
                assert fields["summary"]["failures"] == {"bad_request": 2}
                fields["summary"]["failures"] = {"context_overflow": 1, "some_future_kind": 1}
        lines.append(orjson.dumps(line))
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert b'"context_overflow"' in log.read_bytes() and b'"transient"' in log.read_bytes()
    return log


def test_old_kind_names_read_back_as_the_kinds_they_became(tmp_path: Path) -> None:
    events = [r.tagged.event for r in read_log(old_log(tmp_path)) if r.tagged is not None]
    failed = {e.error_kind for e in events if isinstance(e, JobFailed)}
    retried = {e.error_kind for e in events if isinstance(e, RetryScheduled)}
    assert failed == {ErrorKind.CONTEXT_LENGTH, ErrorKind.UNKNOWN}
    assert retried == {ErrorKind.TIMEOUT}


def test_a_kinds_old_and_new_names_count_as_one_in_a_summary() -> None:
    summary = codec.structure(
        {"failures": {"context_overflow": 1, "context_length": 2, "auth": 1}}, BatchSummary
    )
    assert summary.failures == {ErrorKind.CONTEXT_LENGTH: 3, ErrorKind.AUTH: 1}


def test_a_kind_must_still_be_a_string() -> None:
    line = {"job": "a", "attempt": 1, "seq": 0, "ts": 0.0, "kind": "job_failed"}
    with pytest.raises(codec.DecodeError, match="expected str"):
        codec.decode_tagged({**line, "error_kind": 7, "message": "m", "retryable": False, "attempts": 1})


def test_report_reads_an_old_log_with_the_new_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = old_log(tmp_path)
    report = read_report([log])
    (run,) = report.runs
    assert run.summary == run.logged_summary  # the old summary agrees with the events it sums
    assert run.summary.failures == {ErrorKind.CONTEXT_LENGTH: 1, ErrorKind.UNKNOWN: 1}
    assert report.jobs["too-long"].error_kind is ErrorKind.CONTEXT_LENGTH
    assert report_main([str(log)]) == 1
    out = capsys.readouterr().out
    assert "context_length" in out and "timeout x1" in out and "unknown" in out
    assert "context_overflow" not in out and "transient" not in out


def test_resume_continues_an_old_log_and_the_report_reads_both_runs(tmp_path: Path) -> None:
    log = old_log(tmp_path)
    fixed = [{"id": q["id"], "prompt": q["prompt"]} for q in QUERIES]
    again = run_batch(fixed, backend="sim", resume=str(log), retry_failed=True, options={"ttft": 0})
    assert (again.summary.jobs, again.summary.succeeded) == (2, 2)  # only the two failed jobs ran
    report = read_report([log])
    first, second = report.runs
    assert first.summary.failures == {ErrorKind.CONTEXT_LENGTH: 1, ErrorKind.UNKNOWN: 1}
    assert second.summary.failures == {}
    assert {job: row.status for job, row in report.jobs.items()} == {
        "too-long": "succeeded",
        "odd": "succeeded",
        "flaky": "succeeded",
    }
