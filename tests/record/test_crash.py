"""Crash safety through the real CLI: kill -9 and resume, torn log lines, Ctrl-C and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from benchmarks.crash_trials import run_not_a_log_trial, run_race_trial, run_trial
from orchestrator.record.log import read_log
from tests.helpers import job_ends, wait_for

ROOT = Path(__file__).resolve().parents[2]
TRIAL_SEEDS = range(1000, 1020)


@pytest.fixture(scope="module")
def kill_trials(tmp_path_factory: pytest.TempPathFactory) -> dict[int, object]:
    workdir = tmp_path_factory.mktemp("trials")
    with ThreadPoolExecutor(max_workers=2) as pool:  # each trial is two real processes in turn
        return dict(zip(TRIAL_SEEDS, pool.map(lambda s: run_trial(s, workdir), TRIAL_SEEDS), strict=True))


@pytest.mark.parametrize("seed", TRIAL_SEEDS)
def test_kill_9_then_resume_loses_and_repeats_nothing(seed: int, kill_trials: dict[int, object]) -> None:
    result = kill_trials[seed]
    assert result.lost == [] and result.duplicated == []  # type: ignore[attr-defined]
    assert result.resume_exit == 0 and result.succeeded_once == result.jobs == 200  # type: ignore[attr-defined]


def test_the_trials_kill_at_many_different_moments(kill_trials: dict[int, object]) -> None:
    moments = {r.killed_after for r in kill_trials.values()}  # type: ignore[attr-defined]
    assert len(moments) >= 10


RESULTS_SEEDS = range(3000, 3004)


@pytest.mark.parametrize("seed", RESULTS_SEEDS)
def test_kill_9_then_resume_leaves_each_job_once_in_the_results_file(seed: int, tmp_path: Path) -> None:
    result = run_trial(seed, tmp_path, jobs=120, results=True)
    assert result.resume_exit == 0 and result.succeeded_once == result.jobs == 120
    assert result.results_once == 120 and result.results_repeated == []
    assert result.results_as_exported


RACE_SEEDS = range(2000, 2006)


@pytest.fixture(scope="module")
def race_trials(tmp_path_factory: pytest.TempPathFactory) -> dict[int, object]:
    workdir = tmp_path_factory.mktemp("races")
    return {seed: run_race_trial(seed, workdir, jobs=120) for seed in RACE_SEEDS}


@pytest.mark.parametrize("seed", RACE_SEEDS)
def test_runs_racing_for_one_log_never_run_a_job_twice(seed: int, race_trials: dict[int, object]) -> None:
    result = race_trials[seed]
    assert result.lost == [] and result.duplicated == []  # type: ignore[attr-defined]
    assert result.ok and result.succeeded_once == result.jobs == 120  # type: ignore[attr-defined]


def test_the_races_turn_runs_away(race_trials: dict[int, object]) -> None:
    assert any(2 in r.exits for r in race_trials.values())  # type: ignore[attr-defined]
    assert {r.killed for r in race_trials.values()} == {True, False}  # type: ignore[attr-defined]


def test_files_that_are_not_logs_are_refused_and_untouched(tmp_path: Path) -> None:
    assert run_not_a_log_trial(tmp_path) == []


def orchestrate(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes]) -> int:
    proc.communicate(timeout=30)
    return proc.returncode


def slow_job_file(tmp_path: Path) -> Path:
    job = tmp_path / "slow.toml"
    job.write_text(
        "[defaults]\nconcurrency = 3\n[defaults.sim]\nttft = 0.2\ntokens_per_s = 5\nreply_tokens = 50\n"
        + "".join(f'[[jobs]]\nid = "j{i}"\nprompt = "p{i}"\n' for i in range(8))
    )
    return job


@pytest.mark.parametrize(
    "signum, code, reason", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_stops_gracefully_cancelling_running_jobs_and_skipping_the_rest(
    signum: int, code: int, reason: str, tmp_path: Path
) -> None:
    log = tmp_path / "run.jsonl"
    proc = orchestrate(str(slow_job_file(tmp_path)), "--log", str(log), cwd=tmp_path)
    wait_for(lambda: log.exists() and b"text_delta" in log.read_bytes())
    proc.send_signal(signum)
    # The jobs would take 30 s to finish; how soon the stop ends is measured in benchmarks/stop.py.
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    records = [r.tagged for r in read_log(log) if r.tagged]
    finished = records[-1].event
    assert finished.kind == "batch_finished" and finished.summary.stopped == reason
    assert finished.summary.cancelled == 3 and finished.summary.skipped == 5
    ends = job_ends(records, [f"j{i}" for i in range(8)])
    assert sorted(kinds for kinds in ends.values()) == [["job_cancelled"]] * 3 + [["jobs_skipped"]] * 5
    assert f"stopped: {reason}".encode() in out and b"Traceback" not in err


def test_a_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    job = tmp_path / "stubborn.toml"
    # A graceful stop would have to wait for nothing here, so check the second signal is honoured
    # even while the first is being handled: send both back to back.
    job.write_text(
        "[defaults.sim]\nttft = 0.2\ntokens_per_s = 2\nreply_tokens = 100\n[[jobs]]\nprompt = 'x'\n"
    )
    log = tmp_path / "run.jsonl"
    proc = orchestrate(str(job), "--log", str(log), cwd=tmp_path)
    wait_for(lambda: log.exists() and b"text_delta" in log.read_bytes())
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)  # a hang guard: a reply would take 50 s
    assert proc.returncode == 130 and b"Traceback" not in err


def test_resume_after_a_torn_last_line(tmp_path: Path) -> None:
    job = tmp_path / "small.toml"
    job.write_text(
        "[defaults.sim]\nttft = 0\ntokens_per_s = 0\n"
        + "".join(f'[[jobs]]\nprompt = "p{i}"\n' for i in range(5))
    )
    log = tmp_path / "run.jsonl"
    assert finish(orchestrate(str(job), "--log", str(log), "-q", cwd=tmp_path)) == 0
    lines = log.read_bytes().split(b"\n")
    # Cut the log just inside the third job_succeeded line, as a crash mid-write would.
    succeeded_at = [i for i, line in enumerate(lines) if b'"job_succeeded"' in line][2]
    log.write_bytes(b"\n".join(lines[:succeeded_at]) + b"\n" + lines[succeeded_at][:25])
    assert sum(1 for r in read_log(log) if r.tagged and r.tagged.event.kind == "job_succeeded") == 2
    second = orchestrate(str(job), "--resume", str(log), "--json", cwd=tmp_path)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    summary = orjson.loads(out)
    assert summary["jobs"] == 3 and summary["already_done"] == 2 and summary["succeeded"] == 3
    kinds = [r.tagged.event.kind for r in read_log(log) if r.tagged]
    assert kinds.count("job_succeeded") == 5


def test_an_edited_prompt_runs_again_on_resume(tmp_path: Path) -> None:
    job = tmp_path / "edit.toml"
    job.write_text(
        '[defaults.sim]\nttft = 0\n[[jobs]]\nid = "a"\nprompt = "one"\n[[jobs]]\nid = "b"\nprompt = "two"\n'
    )
    log = tmp_path / "run.jsonl"
    assert finish(orchestrate(str(job), "--log", str(log), "-q", cwd=tmp_path)) == 0
    job.write_text(job.read_text().replace('"two"', '"two, edited"'))
    proc = orchestrate(str(job), "--resume", str(log), "--json", cwd=tmp_path)
    out, _ = proc.communicate(timeout=30)
    summary = orjson.loads(out)
    assert (summary["jobs"], summary["already_done"]) == (1, 1)
    headers = [r.header for r in read_log(log) if r.header]
    assert len(headers) == 2 and headers[1].already_done == 1


def _rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) / 1024


def test_ctrl_c_while_a_big_job_file_loads_exits_130_without_a_traceback(tmp_path: Path) -> None:
    prompts = tmp_path / "many.jsonl"
    prompts.write_bytes(b"".join(orjson.dumps(f"prompt {i}") + b"\n" for i in range(500_000)))
    job = tmp_path / "many.toml"
    job.write_text('prompts_file = "many.jsonl"\n')
    log = tmp_path / "run.jsonl"
    proc = orchestrate(str(job), "--log", str(log), cwd=tmp_path)
    wait_for(lambda: _rss_mib(proc.pid) > 150 or proc.poll() is not None)  # well into the loading
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert not log.exists()  # the batch had not started: the signal came while loading
    assert proc.returncode == 130
    assert b"Traceback" not in err and b"nothing ran" in err
