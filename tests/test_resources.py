"""Running out loudly: the open-file limit against the concurrency, EMFILE as a retryable
``resources`` error, and a disk that fills up mid-run."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from orchestrator import run_batch
from orchestrator.backends.http.exchange import _transport_failure
from orchestrator.errors import RetryableError
from orchestrator.http import ConnectError
from orchestrator.record.log import LogWriteError, LogWriter, read_log
from orchestrator.resources import RESERVED_FILES, fit_open_files, out_of_files
from orchestrator.run.job import failure_from
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
INFINITY = resource.RLIM_INFINITY


def emfile() -> OSError:
    return OSError(errno.EMFILE, "Too many open files")


def test_enough_open_files_change_nothing() -> None:
    fit = fit_open_files(100, {"openai": (64, 1)}, limits=(1024, 1024), raise_limit=False)
    assert (fit.concurrency, fit.needed, fit.notice) == (100, RESERVED_FILES + 64, None)


def test_a_low_soft_limit_is_raised_to_what_the_batch_needs() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = RESERVED_FILES + 1000
    if hard != INFINITY and hard < needed:
        pytest.skip(f"the hard open-file limit here ({hard}) is below {needed}")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        fit = fit_open_files(1000, {"openai": (None, 1)})
        assert (fit.concurrency, fit.notice) == (1000, None)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == needed
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_hard_limit_too_low_lowers_the_concurrency_and_says_so() -> None:
    fit = fit_open_files(1000, {"openai": (None, 1), "sim": (None, 0)}, limits=(256, 256), raise_limit=False)
    assert fit.concurrency <= 256 - RESERVED_FILES and fit.concurrency > 150
    assert fit.notice is not None and "ulimit -n" in fit.notice and f"at most {fit.concurrency}" in fit.notice


def test_only_backends_that_hold_files_count() -> None:
    assert fit_open_files(10_000, {"sim": (None, 0)}, limits=(256, 256), raise_limit=False).notice is None
    fit = fit_open_files(1000, {"claude-code": (4, 4)}, limits=(256, 256), raise_limit=False)
    assert fit.notice is None  # four CLIs at a time, whatever the global concurrency


def test_emfile_anywhere_in_the_chain_is_out_of_files() -> None:
    try:
        try:
            raise emfile()
        except OSError as cause:
            raise OSError("all attempts to connect to api:443 failed") from ExceptionGroup("x", [cause])
    except OSError as exc:
        assert out_of_files(exc)
    assert not out_of_files(OSError(errno.ECONNREFUSED, "refused"))


def test_a_connection_without_a_descriptor_is_a_retryable_resources_error() -> None:
    failure = _transport_failure(ConnectError("api:443: all attempts failed", out_of_files=True), str)
    assert isinstance(failure, RetryableError) and failure.kind == "resources"
    assert "ulimit -n" in failure.message


def test_a_backend_hitting_emfile_is_retried_as_resources_not_a_bug() -> None:
    failure = failure_from(emfile())
    assert failure is not None and (failure.kind, failure.retryable) == ("resources", True)


def test_the_pool_marks_a_socket_that_could_not_be_made(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.http import open_pool
    from orchestrator.http.proxy import Origin

    async def no_socket(*args: object, **kwargs: object) -> None:
        raise OSError("all attempts to connect to 127.0.0.1:9 failed") from emfile()

    monkeypatch.setattr(trio, "open_tcp_stream", no_socket)

    async def main() -> ConnectError:
        async with open_pool() as pool:
            with pytest.raises(ConnectError) as info:
                await pool._connect(
                    Origin("http", "127.0.0.1", 9), None, (Origin("http", "127.0.0.1", 9), None)
                )
            return info.value

    assert trio.run(main).out_of_files


@pytest.fixture
def fake_openai(tmp_path: Path) -> Iterator[int]:
    """The fake OpenAI API in its own process, on a port it picks itself (one picked here and
    bound there later could be taken meanwhile); yields the port it says it listens on."""
    said = tmp_path / "fake-openai.err"
    with open(said, "wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.testing.openai", "--port", "0", "--quiet"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for(lambda: b"(Ctrl-C to stop)" in said.read_bytes() or server.poll() is not None)
        assert server.poll() is None, said.read_text()
        base_url = said.read_text().split(" on ", 1)[1].split()[0]  # http://127.0.0.1:PORT/v1
        yield int(base_url.rsplit(":", 1)[1].split("/")[0])
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_batch_under_ulimit_n_runs_at_a_concurrency_that_fits_and_says_so(
    tmp_path: Path, fake_openai: int
) -> None:
    job = tmp_path / "many.toml"
    job.write_text(
        f'[defaults]\nbackend = "openai"\nmodel = "local-model"\nconcurrency = 1000\nmax_tokens = 8\n'
        f'[backends.openai]\nbase_url = "http://127.0.0.1:{fake_openai}/v1"\napi_key_required = false\n'
        f"concurrency = 1000\nadaptive = false\n"
        + "".join(f'[[jobs]]\nprompt = "question {i}"\n' for i in range(300))
    )
    log = tmp_path / "run.jsonl"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))  # soft and hard: cannot be raised

    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", str(job), "--log", str(log), "-q"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=low_limit,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "open-file limit (ulimit -n) 128 is too low for concurrency 1000" in proc.stderr
    changes = [
        r.tagged.event
        for r in read_log(log)
        if r.tagged is not None and r.tagged.event.kind == "limiter_changed"
    ]
    assert changes[0].change == "concurrency" and 0 < changes[0].value <= 128 - RESERVED_FILES


def test_a_failed_log_write_ends_the_run_with_log_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "lib.jsonl"
    real = LogWriter._write
    calls = 0

    def fill_up(self: LogWriter, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # the header and one batch of events get through
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, data)

    monkeypatch.setattr(LogWriter, "_write", fill_up)
    with pytest.raises(LogWriteError) as info:
        run_batch(
            [f"p{i}" for i in range(50)], backend="sim", log=str(log), concurrency=2, options={"ttft": 0.01}
        )
    assert str(info.value) == f"disk full writing {log}"
    monkeypatch.setattr(LogWriter, "_write", real)
    resumed = run_batch(
        [f"p{i}" for i in range(50)], backend="sim", resume=str(log), concurrency=2, options={"ttft": 0.01}
    )
    assert resumed.ok


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_mid_run_exits_1_with_one_line_and_resume_then_finishes(
    tmp_path: Path, small_disk: Path
) -> None:
    job = tmp_path / "big.toml"
    job.write_text(
        "[defaults]\nconcurrency = 8\n[defaults.sim]\nttft = 0\ntokens_per_s = 0\nreply_tokens = 40\n"
        + "".join(f'[[jobs]]\nid = "j{i}"\nprompt = "p{i}"\n' for i in range(200))
    )
    log = small_disk / "run.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "orchestrator", str(job), "-q"]
    full = subprocess.run([*run, "--log", str(log)], env=env, capture_output=True, text=True, timeout=120)
    assert (full.returncode, full.stderr) == (
        1,
        f"orchestrate: disk full writing {log}; the log is valid up to there (--resume)\n",
    )
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    resumed = subprocess.run(
        [*run, "--resume", str(log)], env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    succeeded: dict[str, int] = {}
    for record in read_log(log):
        if record.tagged is not None and record.tagged.event.kind == "job_succeeded":
            succeeded[str(record.tagged.job_id)] = succeeded.get(str(record.tagged.job_id), 0) + 1
    assert succeeded == {f"j{i}": 1 for i in range(200)}
    shutil.rmtree(small_disk, ignore_errors=True)
