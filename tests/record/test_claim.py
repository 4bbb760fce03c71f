"""One run per log, and only into a log: real processes racing for one log, kill -9, files that
are not logs, logs of another job file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator import ConfigError, run_batch
from orchestrator.record.claim import claim_log, lock_path
from orchestrator.record.log import read_log
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def orchestrate(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def job_file(tmp_path: Path, name: str = "batch.toml", jobs: int = 30) -> Path:
    job = tmp_path / name
    job.write_text(
        "[defaults]\nconcurrency = 4\n[defaults.sim]\nttft = 0.05\ntokens_per_s = 40\nreply_tokens = 20\n"
        + "".join(f'[[jobs]]\nid = "j{i}"\nprompt = "p{i}"\n' for i in range(jobs))
    )
    return job


@contextmanager
def held(proc: subprocess.Popen[str]) -> Iterator[None]:
    """Freeze a run (SIGSTOP) for the block, then let it go on: it keeps its claim on the log and
    cannot finish meanwhile, so what the block checks does not depend on how fast it runs."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def started(log: Path) -> bool:
    return log.exists() and b"attempt_started" in log.read_bytes()


def succeeded_per_job(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in read_log(log):
        if record.tagged is not None and record.tagged.event.kind == "job_succeeded":
            job = record.tagged.job_id
            assert job is not None
            counts[job] = counts.get(job, 0) + 1
    return counts


@pytest.mark.parametrize("second", ["--log", "--resume"], ids=["two-fresh-runs", "run-and-resume"])
@pytest.mark.parametrize("first", ["--log", "--resume"], ids=["fresh", "resumed"])
def test_a_second_run_on_a_log_in_use_exits_2_naming_the_pid(tmp_path: Path, first: str, second: str) -> None:
    job, log = job_file(tmp_path), tmp_path / "run.jsonl"
    running = orchestrate(str(job), first, str(log), "-q", cwd=tmp_path)
    wait_for(lambda: started(log))
    with held(running):  # still running, however long the second command takes to start
        code, err = finish(orchestrate(str(job), second, str(log), "-q", cwd=tmp_path))
    assert code == 2 and err == (
        f"{log}: in use by another run (pid {running.pid}); wait for it to end, or stop it\n"
    )
    assert finish(running)[0] == 0
    assert succeeded_per_job(log) == {f"j{i}": 1 for i in range(30)}
    report = subprocess.run(
        [sys.executable, "-m", "orchestrator", "report", str(log), "--json"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0 and report.stderr == ""  # no "summary differs"
    assert not lock_path(str(log)).exists()  # the finished run took its lock file with it


def test_report_and_tail_read_a_log_while_it_is_claimed(tmp_path: Path) -> None:
    job, log = job_file(tmp_path), tmp_path / "run.jsonl"
    first = orchestrate(str(job), "--log", str(log), "-q", cwd=tmp_path)
    wait_for(lambda: started(log))
    with held(first):  # unfinished while report reads it
        code, err = finish(orchestrate("report", str(log), "--json", cwd=tmp_path))
    assert code == 1 and "in use" not in err  # unfinished, but read
    assert finish(first)[0] == 0


def test_kill_9_releases_the_log_and_a_resume_then_runs(tmp_path: Path) -> None:
    job, log = job_file(tmp_path, jobs=60), tmp_path / "run.jsonl"
    first = orchestrate(str(job), "--log", str(log), "-q", cwd=tmp_path)
    wait_for(lambda: started(log) and b"job_succeeded" in log.read_bytes())
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=10)
    assert lock_path(str(log)).read_text().strip() == str(first.pid)  # stale file, no lock
    code, err = finish(orchestrate(str(job), "--resume", str(log), "-q", cwd=tmp_path))
    assert code == 0, err
    assert succeeded_per_job(log) == {f"j{i}": 1 for i in range(60)}


def test_run_batch_on_a_claimed_log_raises_config_error(tmp_path: Path) -> None:
    log = str(tmp_path / "lib.jsonl")
    with claim_log(log, job_file=None):
        with pytest.raises(ConfigError, match=rf"in use by another run \(pid {os.getpid()}\)"):
            run_batch(["a"], backend="sim", log=log, options={"ttft": 0})
        with pytest.raises(ConfigError, match="in use"):
            run_batch(["a"], backend="sim", resume=log, options={"ttft": 0})
    assert run_batch(["a"], backend="sim", resume=log, options={"ttft": 0}).ok  # released


NOT_LOGS = {
    "job file": "batch.toml",
    "prompts file": "prompts.jsonl",
    "prompts file without a final newline": "one.jsonl",
}


@pytest.mark.parametrize("option", [["--log"], ["--resume"], ["--retry-failed", "--log"]], ids=" ".join)
@pytest.mark.parametrize("target", NOT_LOGS.values(), ids=NOT_LOGS.keys())
def test_a_file_that_is_not_a_log_is_refused_and_left_untouched(
    tmp_path: Path, option: list[str], target: str
) -> None:
    job = job_file(tmp_path, jobs=2)
    (tmp_path / "prompts.jsonl").write_text('"first prompt"\n{"prompt": "second"}\n')
    (tmp_path / "one.jsonl").write_text('{"prompt": "torn?"')
    path = tmp_path / target
    before = path.read_bytes()
    code, err = finish(orchestrate(str(job), *option, str(path), "--force", cwd=tmp_path))
    assert code == 2 and err == (
        f"{path}: not a log written by orchestrate (line 1 is not a log header); refusing to write into it\n"
    )
    assert path.read_bytes() == before
    assert not lock_path(str(path)).exists()


def test_a_log_of_another_job_file_needs_force(tmp_path: Path) -> None:
    mine, other = job_file(tmp_path, "mine.toml", jobs=2), job_file(tmp_path, "other.toml", jobs=2)
    log = tmp_path / "run.jsonl"
    assert finish(orchestrate(str(other), "--log", str(log), "-q", cwd=tmp_path))[0] == 0
    before = log.read_bytes()
    for option in ("--log", "--resume"):
        code, err = finish(orchestrate(str(mine), option, str(log), "-q", cwd=tmp_path))
        assert code == 2 and err == (
            f"{log}: a log of {other}, not of {mine}; --force (force=True) to append to it anyway\n"
        )
    assert log.read_bytes() == before
    code, err = finish(orchestrate(str(mine), "--resume", str(log), "--force", "-q", cwd=tmp_path))
    assert code == 0, err
    assert [h.job_path for h in (r.header for r in read_log(log)) if h] == [str(other), str(mine)]


def test_the_same_job_file_from_another_directory_is_the_same_batch(tmp_path: Path) -> None:
    job, log = job_file(tmp_path, jobs=2), tmp_path / "run.jsonl"
    assert finish(orchestrate(job.name, "--log", str(log), "-q", cwd=tmp_path))[0] == 0
    (tmp_path / "sub").mkdir()
    code, err = finish(orchestrate("../" + job.name, "--resume", str(log), "-q", cwd=tmp_path / "sub"))
    assert code == 0, err


def test_a_library_log_is_not_a_job_files_log(tmp_path: Path) -> None:
    log = tmp_path / "lib.jsonl"
    run_batch(["a"], backend="sim", log=str(log), options={"ttft": 0})
    job = job_file(tmp_path, jobs=1)
    code, err = finish(orchestrate(str(job), "--resume", str(log), "-q", cwd=tmp_path))
    assert code == 2 and "a log of a library batch (no job file)" in err
    cli_log = tmp_path / "cli.jsonl"
    assert finish(orchestrate(str(job), "--log", str(cli_log), "-q", cwd=tmp_path))[0] == 0
    with pytest.raises(ConfigError, match="not of a library batch"):
        run_batch(["a"], backend="sim", resume=str(cli_log), options={"ttft": 0})
    assert run_batch(["a"], backend="sim", resume=str(cli_log), options={"ttft": 0}, force=True).ok


def test_a_hand_edited_line_is_one_clear_error_on_resume(tmp_path: Path) -> None:
    job, log = job_file(tmp_path, jobs=2), tmp_path / "run.jsonl"
    assert finish(orchestrate(str(job), "--log", str(log), "-q", cwd=tmp_path))[0] == 0
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([*lines[:3], b"[1, 2, 3]\n", *lines[3:]]))
    code, err = finish(orchestrate(str(job), "--resume", str(log), "-q", cwd=tmp_path))
    assert (code, err) == (2, f"{log}: line 4: expected a JSON object, got list\n")
