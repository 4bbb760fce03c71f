"""Text from outside is data in every sink: the live panel on a terminal, the piped summary,
``report`` (table, ``--job``, ``--html``), ``tail`` and ``-v`` diagnostics. The job ids and the
replies of one batch hold the whole hostile corpus (tests/hostile.py)."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from orchestrator.record.log import read_log
from orchestrator.visible import visible
from tests.hostile import assert_shown_as_data, write_sim_jobs

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("job_succeeded", "job_failed", "job_cancelled", "job_skipped")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "TERM": "xterm-256color"}


def orchestrate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def orchestrate_in_pty(*args: str, cwd: Path, timeout: float = 120) -> tuple[int, bytes]:
    """Run ``orchestrate`` with a pseudo-terminal as stdin, stdout and stderr (so the live panel
    runs); returns the exit code and every byte the terminal received."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in _env().items() if k not in ("NO_COLOR", "COLUMNS")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every process holding the terminal has gone
                break
            if not data:
                break
            received += data
        return proc.wait(timeout=10), bytes(received)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.fixture
def hostile_run(tmp_path: Path) -> tuple[Path, Path, list[str], subprocess.CompletedProcess[str]]:
    """A finished run of the hostile batch, piped, with -v: (directory, log, job ids, process)."""
    ids = write_sim_jobs(tmp_path / "hostile.toml")
    log = tmp_path / "hostile.jsonl"
    proc = orchestrate("hostile.toml", "--log", str(log), "-v", cwd=tmp_path)
    return tmp_path, log, ids, proc


def _job_of(ids: list[str], text: str) -> str:
    return next(job for job in ids if text in job)


def _terminal_events(log: Path) -> dict[str, list[str]]:
    ends: dict[str, list[str]] = {}
    for record in read_log(log):
        tagged = record.tagged
        if tagged is not None and tagged.event.kind in TERMINAL:
            assert tagged.job_id is not None
            ends.setdefault(tagged.job_id, []).append(tagged.event.kind)
    return ends


def test_live_panel_on_a_terminal_shows_hostile_text_as_data(tmp_path: Path) -> None:
    ids = write_sim_jobs(tmp_path / "hostile.toml", tokens_per_s=30)
    log = tmp_path / "hostile.jsonl"
    code, screen = orchestrate_in_pty("hostile.toml", "--log", str(log), cwd=tmp_path)
    text = screen.decode("utf-8", "replace")
    assert code == 1, text[-2000:]  # one job fails on purpose; nothing crashed
    assert "Traceback" not in text and "MarkupError" not in text
    assert _terminal_events(log) == {
        job: [("job_failed" if n == 0 else "job_succeeded")] for n, job in enumerate(ids)
    }
    assert " running " in text and " tok/s " in text  # the live panel was drawn
    assert_shown_as_data(screen)
    assert "[/INST]" in text and "\\x1b]0;pwned\\x07" in text


def test_piped_summary_and_diagnostics_show_hostile_text_as_data(
    hostile_run: tuple[Path, Path, list[str], subprocess.CompletedProcess[str]],
) -> None:
    _, log, ids, proc = hostile_run
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert_shown_as_data(proc.stdout)
    assert_shown_as_data(proc.stderr)  # -v: the diagnostics name the failed job
    assert "attempt failed" in proc.stderr and visible(ids[0]) in proc.stderr
    assert "[link=https://evil.example]" in proc.stdout and "\\x1b[2J" in proc.stdout
    assert "j0-[/INST]" in proc.stdout and ":skull:" in proc.stdout  # no emoji codes either
    assert len(_terminal_events(log)) == len(ids)


def test_report_table_story_and_html_show_hostile_text_as_data(
    hostile_run: tuple[Path, Path, list[str], subprocess.CompletedProcess[str]],
) -> None:
    tmp_path, log, ids, _ = hostile_run
    table = orchestrate("report", str(log), cwd=tmp_path)
    assert table.returncode == 1 and "Traceback" not in table.stderr, table.stderr
    assert_shown_as_data(table.stdout + table.stderr)
    assert "j0-[/INST]" in table.stdout and "j3-[bold red]x" in table.stdout
    for job in (ids[1], _job_of(ids, "\x1b]0;pwned\x07"), _job_of(ids, "[link=")):
        story = orchestrate("report", str(log), "--job", job, cwd=tmp_path)
        assert story.returncode == 1 and "Traceback" not in story.stderr, story.stderr
        assert_shown_as_data(story.stdout + story.stderr)
        assert visible(job) in story.stdout and "[/quote]" in story.stdout
    html = tmp_path / "report.html"
    written = orchestrate("report", str(log), "--html", str(html), cwd=tmp_path)
    assert written.returncode == 1, written.stderr
    page = html.read_text()
    assert "<script>alert" not in page
    assert "\x1b" not in page


def test_tail_shows_hostile_text_as_data(
    hostile_run: tuple[Path, Path, list[str], subprocess.CompletedProcess[str]],
) -> None:
    tmp_path, log, ids, _ = hostile_run
    proc = orchestrate("tail", str(log), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert_shown_as_data(proc.stdout)
    assert visible(_job_of(ids, "\x1b]0;")) in proc.stdout and "[/INST]" in proc.stdout
    # One line per event: no text from the log breaks a line or rewrites it.
    assert all(line[:10].strip() == "" or line[:10].strip()[0].isdigit() for line in proc.stdout.splitlines())
