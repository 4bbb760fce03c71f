"""Logs are read as a stream: folding one holds per-job rows, never the events or the file."""

from __future__ import annotations

import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path

import orjson

from orchestrator import codec
from orchestrator.events import (
    AttemptStarted,
    BatchStarted,
    JobQueued,
    JobSucceeded,
    StreamFinished,
    Tagged,
    TextDelta,
    Tokens,
)
from orchestrator.record.log import LogRecord, read_log
from orchestrator.report.fold import fold_runs, read_report

JOBS, DELTAS = 20, 2000


def events() -> Iterator[Tagged]:
    """A run of JOBS jobs with DELTAS large text deltas each."""
    yield Tagged(None, 0, 0, 0.0, BatchStarted(run_id="r", jobs=JOBS, started_at="t"))
    for j in range(JOBS):
        job = f"j{j}"
        yield Tagged(job, 0, 0, 0.0, JobQueued(backend="sim", model=None, content_hash="h"))
        yield Tagged(job, 1, 1, 0.1, AttemptStarted(backend="sim"))
        for d in range(DELTAS):
            yield Tagged(job, 1, 2 + d, 0.2, TextDelta("x" * 500))
        yield Tagged(job, 1, 2 + DELTAS, 0.3, StreamFinished(tokens=Tokens(1, DELTAS), cost_usd=0.0))
        yield Tagged(job, 1, 3 + DELTAS, 0.4, JobSucceeded(attempts=1))


def test_the_fold_keeps_no_event_it_has_folded() -> None:
    alive: list[weakref.ref[TextDelta]] = []  # the events: a tagged event is a tuple (no weakref)

    def records() -> Iterator[tuple[str, LogRecord]]:
        for n, tagged in enumerate(events()):
            if isinstance(tagged.event, TextDelta):
                alive.append(weakref.ref(tagged.event))
                # Every delta yielded 10 records ago is gone: nothing (a list, the fold) kept it.
                if len(alive) > 10:
                    assert alive[-11]() is None
            yield "run.jsonl", LogRecord(n, tagged=tagged)
            del tagged

    report = fold_runs(records())
    assert report.summary.succeeded == JOBS and len(alive) == JOBS * DELTAS


def test_reading_a_log_holds_far_less_than_the_file(tmp_path: Path) -> None:
    log = tmp_path / "big.jsonl"
    with open(log, "wb") as f:
        f.write(orjson.dumps({"kind": "log_header", **codec.to_jsonable(_header())}) + b"\n")
        for tagged in events():
            f.write(codec.encode_tagged(tagged))
    size = log.stat().st_size
    assert size > 20_000_000
    tracemalloc.start()
    try:
        report = read_report([log])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.summary.succeeded == JOBS
    assert peak < size / 20  # the rows, a line at a time: not the file, not a list of lines


def test_a_streamed_log_reads_back_every_record_in_order(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    expected = list(events())[:50]
    header = orjson.dumps({"kind": "log_header", **codec.to_jsonable(_header())}) + b"\n"
    log.write_bytes(header + b"".join(codec.encode_tagged(t) for t in expected) + b'{"job": "torn')
    records = list(read_log(log))
    assert records[0].header == _header()
    assert [r.tagged for r in records[1:]] == expected
    assert [r.line for r in records] == list(range(1, 52))


def _header() -> object:
    from orchestrator.record.log import LogHeader

    return LogHeader(
        schema=codec.LOG_SCHEMA,
        version="0",
        run_id="r",
        started_at="t",
        job_file=None,
        jobs=JOBS,
        settings={},
    )
