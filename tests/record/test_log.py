"""The log file itself: appending after a crash, reading a torn tail."""

from __future__ import annotations

from pathlib import Path

from orchestrator import codec
from orchestrator.events import JobSucceeded, Tagged
from orchestrator.record.log import LogHeader, LogWriter, read_log

HEADER = LogHeader(schema=1, version="t", run_id="r", started_at="now", job_file=None, jobs=1, settings={})


def line(job: str) -> bytes:
    return codec.encode_tagged(Tagged(job, 1, 0, 1.0, JobSucceeded(attempts=1)))


def test_appending_after_a_torn_line_drops_only_the_torn_part(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_bytes(line("a") + line("b")[:20])
    writer = LogWriter(str(log))
    writer.open(HEADER)
    writer.close()
    records = list(read_log(log))
    assert [r.tagged.job_id for r in records if r.tagged] == ["a"]
    assert records[-1].header is not None


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_bytes(line("a") + line("b").rstrip(b"\n"))
    assert [r.tagged.job_id for r in read_log(log) if r.tagged] == ["a", "b"]
    writer = LogWriter(str(log))
    writer.open(HEADER)
    writer.close()
    assert [r.tagged.job_id for r in read_log(log) if r.tagged] == ["a", "b"]  # not cut on append
