"""A log in the first format (schema 1: every field of every line written) still reads: report,
export, resume and tail give what they give for the same run written in today's format."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

from orchestrator import codec
from orchestrator.cli.report import main as report_main
from orchestrator.cli.tail import follow
from orchestrator.events import StreamFinished, Tagged
from orchestrator.record.log import read_log
from orchestrator.record.resume import plan
from orchestrator.report.export import log_rows
from orchestrator.report.fold import read_report
from orchestrator.spec import BatchSpec
from tests.helpers import as_logged, make_spec, run_virtual

SCHEMA1 = Path(__file__).resolve().parents[1] / "fixtures" / "logs" / "schema1.jsonl"
# The batch that wrote the fixture (on the virtual clock, so every run of it logs the same events).
QUERIES: list[Any] = [
    {"id": "clean", "prompt": "A job with no faults.", "metadata": {"topic": "a"}},
    {
        "id": "rate-limited",
        "prompt": "Rate limited twice",
        "sim": {"faults": ["rate_limit", "rate_limit"], "retry_after": 0.5},
    },
    {
        "id": "dropped",
        "prompt": "The connection drops",
        "sim": {"faults": ["mid_stream"], "fault_after_tokens": 5},
    },
    {"id": "bad-request", "prompt": "A 400", "sim": {"faults": ["fatal"]}},
    {
        "id": "city",
        "prompt": "A city as JSON",
        "output_schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        "sim": {"output": ["invalid", "valid"]},
    },
]


JOB_IDS = {query["id"] for query in QUERIES}


def batch(log: Path | None = None) -> BatchSpec:
    return make_spec(
        QUERIES,
        seed=3,
        log=None if log is None else str(log),
        concurrency=2,
        retry={"max_attempts": 3, "base_delay": 0.1},
    )


@pytest.fixture
def both(tmp_path: Path) -> tuple[Path, Path]:
    """(the schema 1 fixture, the same run written now)."""
    new = tmp_path / "new.jsonl"
    run_virtual(batch(new))
    return SCHEMA1, new


def test_the_fixture_is_schema_1_and_todays_log_is_smaller(both: tuple[Path, Path]) -> None:
    old, new = both
    assert orjson.loads(old.read_bytes().splitlines()[0])["schema"] == 1
    assert orjson.loads(new.read_bytes().splitlines()[0])["schema"] == codec.LOG_SCHEMA == 3
    assert new.stat().st_size < 0.7 * old.stat().st_size


def records(log: Path) -> list[Tagged]:
    """The log's job records (batch-level ones differ by run: run id, start, order at equal
    times), the stream's own duration to the microsecond (the simulator's are rounded now)."""
    out: list[Tagged] = []
    for record in read_log(log):
        t = record.tagged
        if t is not None and t.job_id is not None:
            event = t.event
            if isinstance(event, StreamFinished) and event.duration_s is not None:
                t = t._replace(event=attrs.evolve(event, duration_s=round(event.duration_s, 6)))
            out.append(t)
    return out


def per_job(log: Path) -> dict[str | None, list[Tagged]]:
    """Each job's records, every run of deltas joined (where the writer cut a long run is its
    choice: the fixture's writer held a run for less time)."""
    return as_logged(records(log))


def test_both_formats_read_back_as_the_same_events(both: tuple[Path, Path]) -> None:
    old, new = both
    assert per_job(old) == per_job(new)
    assert len(per_job(old)) == len(QUERIES)


def test_report_of_an_old_log_is_the_report_of_the_new_one(
    both: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = both
    was, now = read_report([old]), read_report([new])
    assert was.runs[0].summary == was.runs[0].logged_summary  # the old events still add up
    assert was.jobs == now.jobs and was.runs[0].attempts == now.runs[0].attempts
    wall = {"wall_s": 0.0, "jobs_per_s": 0.0, "tokens_per_s": 0.0}  # the batch's own end, not a job's
    assert attrs.evolve(was.summary, **wall) == attrs.evolve(now.summary, **wall)
    assert report_main([str(old), "--json"]) == 1  # one job failed
    assert orjson.loads(capsys.readouterr().out) == orjson.loads(
        codec.summary_json(was.runs[0].logged_summary)
    )


def test_export_of_an_old_log_is_the_export_of_the_new_one(both: tuple[Path, Path]) -> None:
    old, new = both
    rows = log_rows([old])
    assert rows == log_rows([new])
    assert {row["id"]: row["status"] for row in rows} == {
        "clean": "succeeded",
        "rate-limited": "succeeded",
        "dropped": "succeeded",
        "bad-request": "failed",
        "city": "succeeded",
    }


def test_an_old_log_resumes_and_the_resumed_run_appends_in_the_new_format(tmp_path: Path) -> None:
    log = tmp_path / "old.jsonl"
    shutil.copy(SCHEMA1, log)
    planned = plan(batch(), str(log), retry_failed=True)
    assert planned.already_done == 4 and [job.id for job in planned.spec.jobs] == ["bad-request"]
    run_virtual(planned.spec)
    headers = [r.header.schema for r in read_log(log) if r.header]
    assert headers == [1, codec.LOG_SCHEMA]
    report = read_report([log])
    assert len(report.runs) == 2 and report.jobs["bad-request"].run == 2
    assert plan(batch(), str(log), retry_failed=True).already_done == 4  # it failed again, for good


def test_tail_prints_an_old_log_as_it_prints_the_new_one(both: tuple[Path, Path]) -> None:
    printed: dict[Path, list[str]] = {}
    for log in both:
        out: list[str] = []
        assert follow(str(log), out.extend, interval=0.001) == 0
        printed[log] = sorted(line for line in out if line.split()[1] in JOB_IDS)  # the jobs' lines
    old, new = printed.values()
    assert len(old) == len(records(SCHEMA1)) and len(new) == len(records(both[1]))
    # the same lines but for the text deltas (their runs cut at other places)
    assert [line for line in old if "_delta" not in line] == [line for line in new if "_delta" not in line]
