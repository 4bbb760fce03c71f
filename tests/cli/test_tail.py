"""`orchestrate tail`: every event of a log being written, once, in order; partial lines wait for
their end; it stops at batch_finished and exits 130, quietly, on Ctrl-C."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from orchestrator.cli.tail import follow
from orchestrator.config.jobfile import Overrides, load_job_file
from orchestrator.record.log import read_log
from tests.helpers import run_virtual

ROOT = Path(__file__).resolve().parents[2]
EVENT_LINE = re.compile(r"^\s*(\d+\.\d{3})\s{2}(\S+)\s+(?:#(\d+)\s+)?(\w+)")


def orchestrate(*args: str, cwd: Path, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def logged_events(log: Path) -> list[tuple[str, str, str, str]]:
    """(ts to the millisecond, job, attempt, kind) of every event in the log, in order."""
    out = []
    for record in read_log(log):
        t = record.tagged
        if t is not None:
            out.append((f"{t.ts:.3f}", t.job_id or "-", str(t.attempt) if t.attempt else "", t.event.kind))
    return out


def printed_events(text: str) -> list[tuple[str, str, str, str]]:
    out = []
    for line in text.splitlines():
        match = EVENT_LINE.match(line)
        if match:
            ts, job, attempt, kind = match.groups()
            out.append((ts, job, attempt or "", kind))
    return out


@pytest.mark.slow
def test_tail_of_a_running_batch_prints_every_event_once_in_order(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    tail = orchestrate("tail", str(log), cwd=tmp_path)  # started first: it waits for the log
    run = orchestrate(str(ROOT / "jobs" / "faults.toml"), "--log", str(log), "-q", cwd=tmp_path)
    run.communicate(timeout=60)
    out, err = tail.communicate(timeout=30)

    assert tail.returncode == 0, err
    assert printed_events(out) == logged_events(log)
    assert out.count("── run ") == 1
    assert out.splitlines()[-1].split()[2] == "batch_finished"


def test_partial_lines_are_printed_only_once_complete(tmp_path: Path) -> None:
    source = tmp_path / "full.jsonl"
    run_virtual(load_job_file(ROOT / "jobs" / "faults.toml", Overrides(log=str(source))), keep_text=False)
    data = source.read_bytes()
    log = tmp_path / "growing.jsonl"
    log.write_bytes(b"")

    def write_in_ragged_pieces() -> None:
        rng = random.Random(4)
        with open(log, "ab", buffering=0) as f:
            at = 0
            while at < len(data):
                n = rng.randint(1, 400)  # cuts lines anywhere, JSON strings included
                f.write(data[at : at + n])
                at += n
                time.sleep(0.001)

    writer = threading.Thread(target=write_in_ragged_pieces)
    printed: list[str] = []
    writer.start()
    try:
        assert follow(str(log), printed.extend, interval=0.002) == 0
    finally:
        writer.join()
    assert printed_events("\n".join(printed)) == logged_events(source)
    assert not any("not JSON" in line for line in printed)


def test_tail_of_a_finished_log_prints_it_and_exits(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    run_virtual(load_job_file(ROOT / "jobs" / "sim.toml", Overrides(log=str(log))), keep_text=False)
    proc = orchestrate("tail", str(log), "--no-deltas", cwd=tmp_path)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == ""
    expected = [e for e in logged_events(log) if e[3] != "text_delta"]
    assert printed_events(out) == expected


@pytest.mark.slow
def test_ctrl_c_exits_130_quietly(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    full = tmp_path / "full.jsonl"
    run_virtual(load_job_file(ROOT / "jobs" / "sim.toml", Overrides(log=str(full))), keep_text=False)
    lines = full.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(line for line in lines if b'"batch_finished"' not in line))
    proc = orchestrate("tail", str(log), cwd=tmp_path)
    assert proc.stdout is not None
    assert "── run " in proc.stdout.readline()  # it is up and following
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert err == ""


def test_a_record_tail_cannot_read_hides_neither_the_records_before_it_nor_the_jobs_end() -> None:
    # One line holds a job's attempt (log schema 3); a record of a kind from a newer version in
    # the middle is shown as undecoded, and the records around it (the job's end) as usual.
    from orchestrator.cli.tail import _describe_line
    from orchestrator.record.lines import LogLines

    line = {
        "job": "q",
        "ts": 0.1,
        "kind": "job_queued",
        "backend": "sim",
        "content_hash": "h",
        "then": [
            ["attempt_started", 1000],
            ["from_a_newer_version", 1000, {"x": 1}],
            ["job_succeeded", 1000],
        ],
    }
    printed, finished = _describe_line(orjson.dumps(line), 2, lambda _: True, LogLines())

    kinds = [text.split()[3 if "#" in text else 2] for text in printed]
    assert kinds == ["job_queued", "attempt_started", "from_a_newer_version", "job_succeeded"]
    assert "undecoded" in printed[2] and "#1" in printed[3]
    assert not finished
