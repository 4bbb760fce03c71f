"""``orchestrate --engine ray``: Ray is never imported unless asked for; a Ctrl-C ends every job
and leaves no process behind (its own Ray instance included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.record.log import read_log
from orchestrator.testing.ray import loopback_env, processes_marked, shard_workers

ROOT = Path(__file__).resolve().parents[3]


def python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_command_line_and_a_local_run_do_not_import_ray() -> None:
    proc = python(
        "import sys\n"
        "import orchestrator.cli.main\n"
        "from orchestrator.cli.arguments import build_parser\n"
        "assert '--engine' in build_parser().format_help()\n"
        "from orchestrator.api import run_batch\n"
        "assert run_batch(['hi'], backend='sim', options={'ttft': 0}).ok\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def wait_for(condition: object, seconds: float) -> bool:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_ends_every_job_and_leaves_no_process(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    home = tmp_path / "home"
    home.mkdir()
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        "[defaults]\nbackend = 'sim'\n[defaults.sim]\nttft = 600\n"
        + "".join(f"[[jobs]]\nid = 'job-{i}'\nprompt = 'question {i}'\n" for i in range(12))
    )
    log = tmp_path / "run.jsonl"
    env = {**os.environ, **loopback_env(home, mark), "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    args = [str(jobs), "--engine", "ray", "-q", "-c", "8", "--log", str(log)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: shard_workers(mark), 90), "no shard started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        left = wait_for(lambda: not list(processes_marked(mark)), 30)
        assert left, list(processes_marked(mark))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid, _ in processes_marked(mark):  # only what this test started: it carries the mark
            os.kill(pid, signal.SIGKILL)
    ends: dict[str, str] = {}
    for record in read_log(log):
        tagged = record.tagged
        if tagged is not None and tagged.job_id is not None and tagged.event.kind.startswith("job_c"):
            ends[tagged.job_id] = tagged.event.kind
    assert len(ends) == 8 and set(ends.values()) == {"job_cancelled"}  # the started ones


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--engine", "ray", "--address", "ray://head:10001"], "the Ray Client (ray://) cannot stream"),
        (["--address", "auto"], "--address: only with --engine ray"),
    ],
)
def test_an_address_the_engine_cannot_use_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    jobs = tmp_path / "jobs.toml"
    jobs.write_text("[[jobs]]\nbackend = 'sim'\nprompt = 'hi'\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", str(jobs), "--no-log", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert says in proc.stderr and len(proc.stderr.splitlines()) == 1
