"""The log file itself: appending after a crash, reading a torn tail."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from orchestrator import codec
from orchestrator.events import JobSucceeded, Tagged
from orchestrator.record.log import HEADER_KIND, LogError, LogHeader, LogWriter, read_log

HEADER = LogHeader(schema=1, version="t", run_id="r", started_at="now", job_file=None, jobs=1, settings={})


def line(job: str) -> bytes:
    return codec.encode_tagged(Tagged(job, 1, 0, 1.0, JobSucceeded(attempts=1)))


def header_line() -> bytes:
    return orjson.dumps({"kind": HEADER_KIND, **codec.to_jsonable(HEADER)}) + b"\n"


def test_appending_after_a_torn_line_drops_only_the_torn_part(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_bytes(header_line() + line("a") + line("b")[:20])
    writer = LogWriter(str(log))
    writer.open(HEADER)
    writer.close()
    records = list(read_log(log))
    assert [r.tagged.job_id for r in records if r.tagged] == ["a"]
    assert records[-1].header is not None


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_bytes(header_line() + line("a") + line("b").rstrip(b"\n"))
    assert [r.tagged.job_id for r in read_log(log) if r.tagged] == ["a", "b"]
    writer = LogWriter(str(log))
    writer.open(HEADER)
    writer.close()
    assert [r.tagged.job_id for r in read_log(log) if r.tagged] == ["a", "b"]  # not cut on append


NOT_LOGS = {
    "job file": b'[defaults]\nbackend = "sim"\n[[jobs]]\nprompt = "hi"\n',
    "job file without a final newline": b'[[jobs]]\nprompt = "hi"',
    "prompts file": b'"one prompt"\n{"prompt": "two"}\n',
    "prompts file of one line": b'"one prompt"',
    "an event line first": line("a"),
    "a blank first line": b"\n" + header_line(),
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("content", NOT_LOGS.values(), ids=NOT_LOGS.keys())
def test_a_file_that_is_not_a_log_is_neither_read_nor_modified(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not-a-log"
    path.write_bytes(content)
    with pytest.raises(LogError, match="not a log written by orchestrate"):
        list(read_log(path))
    with pytest.raises(LogError, match="not a log"):
        LogWriter(str(path)).open(HEADER)
    assert path.read_bytes() == content


@pytest.mark.parametrize("cut", [0, 1, 10, 19, 40])
def test_a_header_cut_by_a_crash_is_an_empty_log(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(header_line()[:cut])
    assert list(read_log(path)) == []
    writer = LogWriter(str(path))
    writer.open(HEADER)
    writer.close()
    assert [r.header for r in read_log(path)] == [HEADER]


@pytest.mark.parametrize(
    "bad, message",
    [(b"[1, 2]", "line 3: expected a JSON object, got list"), (b'"text"', "line 3: expected a JSON object")],
)
def test_a_hand_edited_line_that_is_not_an_object_names_file_and_line(
    tmp_path: Path, bad: bytes, message: str
) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(header_line() + line("a") + bad + b"\n" + line("b"))
    with pytest.raises(LogError, match=f"{path}: {message}"):
        list(read_log(path))
