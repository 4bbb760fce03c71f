"""Log schema 2 tried against what could break it: an old log cut by a crash and resumed in the
new format, read back by report, export and tail across both runs; job ids that look like
numbers or hold quotes, newlines and escape sequences; lines that leave out what earlier lines
of their job say, for the kinds the batch APIs and rate limits write."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import codec
from orchestrator.cli import tail as tail_module
from orchestrator.cli.tail import follow
from orchestrator.record.lines import LogLines
from orchestrator.record.log import read_log
from orchestrator.record.resume import plan
from orchestrator.report.export import log_rows
from orchestrator.report.fold import read_report
from orchestrator.visible import visible
from tests.helpers import Recorder, as_logged, make_spec, run_virtual
from tests.record.test_schema1 import SCHEMA1, batch

FIXTURE = SCHEMA1.read_bytes()
HEADER_END = FIXTURE.index(b"\n") + 1


def _tail(log: Path) -> list[str]:
    out: list[str] = []
    assert follow(str(log), out.extend, interval=0.001) == 0
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(HEADER_END, len(FIXTURE)))
def test_an_old_log_cut_by_a_crash_resumes_in_the_new_format_and_reads_back_across_both_runs(
    tmp_path_factory: Any, cut: int
) -> None:
    log = tmp_path_factory.mktemp("log") / "old.jsonl"
    log.write_bytes(FIXTURE[:cut])  # the old run killed mid-write
    planned = plan(batch(), str(log))
    recorder = Recorder()
    run_virtual(planned.spec, subscribers=[recorder])
    runs: list[list[Any]] = []
    for record in read_log(log):
        if record.header is not None:
            runs.append([record.header.schema])
        else:
            runs[-1].append(record.tagged)
    assert [run[0] for run in runs] == [1, codec.LOG_SCHEMA]
    # The new run's lines read back as the events it sent.
    assert as_logged(runs[1][1:]) == as_logged(recorder.events)
    # Every job is done, in the report and the export, and tail reads every line.
    report = read_report([log])
    assert {job: row.status for job, row in report.jobs.items()} == {
        "clean": "succeeded",
        "rate-limited": "succeeded",
        "dropped": "succeeded",
        "bad-request": "failed",
        "city": "succeeded",
    }
    assert {row["id"] for row in log_rows([log])} == set(report.jobs)
    printed = _tail(log)
    assert not any("undecoded" in line or "not JSON" in line for line in printed)
    assert sum(line.split()[1] in report.jobs for line in printed) == sum(
        1 for run in runs for t in run[1:] if t.job_id is not None
    )


_ODD_IDS = st.one_of(
    st.sampled_from(["1", "007", "1.5", "-0", "null", "true", '"', "\\", "\n", "\x1b[31mred", "\u2028", " "]),
    # NUL and lone surrogates are refused at load (tests/config/test_lone_surrogates.py)
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=6),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(_ODD_IDS, min_size=1, max_size=5, unique=True))
def test_job_ids_that_look_like_numbers_or_hold_quotes_newlines_and_escapes_read_back(
    tmp_path_factory: Any, ids: list[str]
) -> None:
    log = tmp_path_factory.mktemp("log") / "run.jsonl"
    queries = [
        {"id": job, "prompt": f"p{i % 2}", "sim": {"faults": ["server_error"] if i == 2 else []}}
        for i, job in enumerate(ids)
    ]
    spec = attrs.evolve(
        make_spec(queries, sim={"ttft": 0.5, "reply_tokens": 4}, retry={"base_delay": 0.1}), log=str(log)
    )
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    logged = [r.tagged for r in read_log(log) if r.tagged is not None]
    assert as_logged(logged) == as_logged(recorder.events)
    assert [row["id"] for row in log_rows([log])] == ids
    assert read_report([log]).summary == result.summary
    for line in _tail(log):
        assert visible(line) == line, line  # ids are data: never a raw control character


@pytest.mark.parametrize("seen_cut", [False, True], ids=["cut-and-appended", "cut-seen-then-appended"])
def test_tail_following_a_run_killed_mid_line_reads_the_resumed_run_that_cuts_the_torn_line(
    tmp_path: Path, seen_cut: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run killed mid-line leaves a torn last line; the resumed run cuts it and appends its own
    # lines from there. A tail that had read the torn bytes (and waits for the rest of the line)
    # must read the resumed run from the cut, not from where it had got to.
    log = tmp_path / "run.jsonl"
    whole = FIXTURE.splitlines(keepends=True)
    killed = b"".join(whole[:6]) + whole[6][: len(whole[6]) // 2]
    log.write_bytes(killed)
    planned = plan(batch(), str(log))
    resumed = tmp_path / "resumed.jsonl"
    shutil.copy(log, resumed)
    run_virtual(attrs.evolve(planned.spec, log=str(resumed)))  # what the resume appends
    appended = resumed.read_bytes()[killed.rindex(b"\n") + 1 :]
    assert len(appended) > len(killed)

    cut_seen = threading.Event()
    real_cut = tail_module._cut

    def noting_cut(f: Any, pending: bytes, at: int) -> bool:
        cut = real_cut(f, pending, at)
        if cut:
            cut_seen.set()
        return cut

    monkeypatch.setattr(tail_module, "_cut", noting_cut)
    out: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        tail = pool.submit(follow, str(log), out.extend, interval=0.3)
        deadline = time.monotonic() + 30
        while len(out) < 5 and time.monotonic() < deadline:  # the 5 whole event lines are read
            time.sleep(0.01)
        time.sleep(0.1)  # tail is asleep, the torn bytes read
        with open(log, "r+b") as f:  # the resume: cut the torn line, append the new run
            f.truncate(killed.rindex(b"\n") + 1)
            if seen_cut:  # tail polls the cut file before the new run's lines come
                assert cut_seen.wait(30), "tail never saw the cut"
            f.seek(0, os.SEEK_END)
            f.write(appended)
        assert tail.result(timeout=30) == 0
    assert not any("not JSON" in line or "undecoded" in line for line in out), "\n".join(out)
    assert sum("── run" in line for line in out) == 2
    assert out == _tail(log)  # the killed run's lines once, then the new run's


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, len(FIXTURE)), min_size=1, max_size=12))
def test_tail_of_a_log_being_written_prints_what_tail_of_the_whole_log_prints(
    tmp_path_factory: Any, cuts: list[int]
) -> None:
    whole = tmp_path_factory.mktemp("whole") / "run.jsonl"
    whole.write_bytes(FIXTURE)
    log = whole.with_name("growing.jsonl")
    log.write_bytes(b"")
    out: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        tail = pool.submit(follow, str(log), out.extend, interval=0.001)
        with open(log, "ab", buffering=0) as f:
            done = 0
            for cut in [*sorted(cuts), len(FIXTURE)]:  # the writer's writes, cut anywhere
                f.write(FIXTURE[done:cut])
                done = max(done, cut)
                time.sleep(0.003)
        assert tail.result(timeout=30) == 0
    assert out == _tail(whole)


def test_an_attempt_started_that_does_not_decode_still_starts_the_attempt_for_the_lines_after_it() -> None:
    # A newer version's attempt_started with a field this one does not know: tail shows it as
    # undecoded and goes on; the attempt's next lines leave out their attempt number.
    written = [
        {"job": "q", "ts": 0.1, "kind": "job_queued", "backend": "sim", "content_hash": "h"},
        {"job": "q", "ts": 0.2, "kind": "attempt_started", "a_field_from_a_newer_version": 1},
        {"job": "q", "ts": 0.3, "kind": "text_delta", "text": "x"},
    ]
    reader = LogLines()
    reader.decode(written[0])
    with pytest.raises(codec.DecodeError):
        reader.decode(written[1])
    delta = reader.decode(written[2])
    assert (delta.seq, delta.attempt) == (2, 1)
