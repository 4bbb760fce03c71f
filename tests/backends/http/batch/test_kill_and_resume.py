"""``orchestrate`` killed (SIGKILL) while its remote batches run, then ``--resume``: no request is
sent twice and every job ends once. Real processes: the fake batch API and the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from orchestrator.testing.remote_batches import FINISH, SUBMISSIONS
from tests.http_helpers import fake_batches_process

ROOT = Path(__file__).resolve().parents[4]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789"}


@pytest.fixture
def fake_api() -> Iterator[str]:
    """The fake Message Batches API in its own process; its base URL. Its batches end when the
    test says (:func:`finish`), so a slow moment of the test cannot let them end early."""
    yield from _fake_api()


@pytest.fixture
def hanging_fake_api() -> Iterator[str]:
    """The same, whose first create call makes its batch and never answers."""
    yield from _fake_api("--hang-creates", "1")


def _fake_api(*more: str) -> Iterator[str]:
    yield from fake_batches_process(ENV, "--processing", "3600", *more)


def write_jobs(tmp_path: Path, fake_api: str) -> None:
    jobs = "\n".join(f'[[jobs]]\nid = "j{n}"\nprompt = "q{n}"\n' for n in range(6))
    (tmp_path / "jobs.toml").write_text(
        f'[defaults]\nbackend = "anthropic-batch"\nmodel = "claude-haiku-4-5"\nconcurrency = 100\n\n'
        f'[backends.anthropic-batch]\nbase_url = "{fake_api}"\nbatch_requests = 4\nbatch_linger = 0.2\n'
        f"poll_min = 0.2\npoll_max = 0.5\n\n{jobs}"
    )


def test_a_killed_run_resumed_pays_each_request_once(tmp_path: Path, fake_api: str) -> None:
    write_jobs(tmp_path, fake_api)
    log = tmp_path / "run.jsonl"
    # both chunks sent
    run_and_kill(tmp_path, log, lambda: log.exists() and log.read_bytes().count(b'"batch_submitted"') >= 2)
    resume_and_check(tmp_path, log, fake_api)


def run_and_kill(tmp_path: Path, log: Path, when: Callable[[], bool]) -> None:
    """Start ``orchestrate jobs.toml`` and kill it (SIGKILL) as soon as ``when()`` holds."""
    first = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "jobs.toml", "--log", str(log), "--json"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not when():
            assert first.poll() is None, "the run ended before it was killed"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)


def resume_and_check(tmp_path: Path, log: Path, fake_api: str) -> None:
    """The remote batches end; then ``--resume``: every job succeeds once, and the fake saw each
    request in one batch."""
    assert b'"job_succeeded"' not in log.read_bytes()
    with urllib.request.urlopen(
        urllib.request.Request(fake_api + FINISH, method="POST"), timeout=30
    ) as answer:
        assert len(orjson.loads(answer.read())) == 2  # both batches were still processing
    again = subprocess.run(
        [sys.executable, "-m", "orchestrator", "jobs.toml", "--resume", str(log), "--json"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["succeeded"] == 6
    assert submissions(fake_api) == {f"j{n}": 1 for n in range(6)}
    succeeded = [line for line in log.read_bytes().splitlines() if b'"job_succeeded"' in line]
    assert sorted(orjson.loads(line)["job"] for line in succeeded) == [f"j{n}" for n in range(6)]


def submissions(fake_api: str) -> dict[str, int]:
    with urllib.request.urlopen(fake_api + SUBMISSIONS, timeout=30) as answer:
        counted: dict[str, int] = orjson.loads(answer.read())
    return counted


def test_a_run_killed_during_a_create_call_resumed_pays_each_request_once(
    tmp_path: Path, hanging_fake_api: str
) -> None:
    write_jobs(tmp_path, hanging_fake_api)
    log = tmp_path / "run.jsonl"
    # both batches made: the first's create call hangs, the second's is answered
    run_and_kill(
        tmp_path,
        log,
        lambda: len(submissions(hanging_fake_api)) >= 6 and log.read_bytes().count(b'"batch_submitted"') >= 1,
    )
    assert log.read_bytes().count(b'"batch_submitted"') == 1
    assert log.read_bytes().count(b'"batch_submitting"') == 2
    resume_and_check(tmp_path, log, hanging_fake_api)
