"""The JSONL results file written as jobs end."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import trio

from orchestrator.events import JobInput, JobQueued, JobsSkipped, Tagged
from orchestrator.record.results_file import ResultsFile
from tests.record.test_aggregate import Clock, job_events


def ids(path: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]


def test_a_row_is_appended_as_each_job_ends(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    clock = Clock()
    a = job_events(clock, "a", [["he", "llo"]], succeed=True)
    b = job_events(clock, "b", [["x"], ["y"]], succeed=False)
    writer = ResultsFile(path)

    async def main() -> None:
        await writer.deliver(a[:-1])
        assert ids(path) == []  # not ended yet
        await writer.deliver([a[-1], *b])
        assert ids(path) == ["a", "b"]

    trio.run(main)
    writer.close()
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert (rows[0]["text"], rows[0]["status"]) == ("hello", "succeeded")
    assert (rows[1]["status"], rows[1]["attempts"], rows[1]["error_kind"]) == ("failed", 2, "connection")


def test_jobs_a_stop_skipped_get_rows_with_their_input_columns(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    clock = Clock()
    queued = [
        event
        for job in ("a", "b", "c")
        for event in (
            clock.tag(job, 0, JobQueued(backend="sim", model="m", content_hash="h")),
            clock.tag(job, 0, JobInput(row={"n": job}, metadata={})),
        )
    ]
    skipped = Tagged(None, 0, 0, clock.t + 1, JobsSkipped(reason="deadline", count=2, ranges=((1, 3),)))
    writer = ResultsFile(path)
    trio.run(writer.deliver, [*queued, skipped])
    writer.close()
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(r["id"], r["status"], r["error"], r["row.n"], r["backend"]) for r in rows] == [
        ("b", "skipped", "deadline", "b", "sim"),
        ("c", "skipped", "deadline", "c", "sim"),
    ]


def test_a_file_that_cannot_be_written_stops_the_writing_not_the_run(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    writer = ResultsFile(path)
    writer.close()
    writer._file = open(os.devnull, "rb")  # a file that refuses writes
    trio.run(writer.deliver, job_events(Clock(), "a", [["x"]], succeed=True))
    assert writer.failed is not None and writer.written == 0
    writer.close()
