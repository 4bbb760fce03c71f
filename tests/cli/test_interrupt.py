"""Ctrl-C while remote batches run: the question, its answers, its default and a second Ctrl-C;
then the whole command under a terminal (a pty) against the fake batch API in its own process."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
import trio

from orchestrator.cli.interrupt import DETACH_AFTER, ask_on_interrupt
from orchestrator.run.control import RunControl
from orchestrator.testing.remote_batches import CANCELS
from tests.http_helpers import fake_batches_process

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "NO_COLOR": "1",
    "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
    "COLUMNS": "200",
}


class Signals:
    """A stand-in for trio's signal receiver: ``send`` delivers one more signal."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[int](10)

    def __aiter__(self) -> AsyncIterator[int]:
        return self.receive.__aiter__()


async def asked(
    answer: str | None, *, again_after: float | None = None, running: int = 2
) -> tuple[RunControl, list[str], float]:
    """Ask as on a first Ctrl-C; the choice, what was said and how long the question took."""
    control = RunControl()
    said: list[str] = []
    signals = Signals()

    async def read_line() -> str:
        if answer is None:
            await trio.sleep_forever()
        await trio.sleep(1)
        return f"{answer}\n"

    before_stop = ask_on_interrupt(control, lambda: running, say=said.append, read_line=read_line)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        if again_after is not None:

            async def ctrl_c_again() -> None:
                await trio.sleep(again_after)
                await signals.send.send(signal.SIGINT)

            nursery.start_soon(ctrl_c_again)
        await before_stop(signal.SIGINT, signals.receive)
        nursery.cancel_scope.cancel()
    return control, said, trio.current_time() - start


async def test_c_cancels_the_remote_batches(autojump_clock: trio.abc.Clock) -> None:
    control, said, _ = await asked("c")
    assert control.cancel_remote is True
    assert "2 remote batches still running" in said[0] and said[1] == "cancelling the 2 remote batches"


async def test_enter_alone_detaches(autojump_clock: trio.abc.Clock) -> None:
    control, said, took = await asked("")
    assert control.cancel_remote is False and took == 1 and "--resume" in said[1]


async def test_no_answer_detaches_after_a_short_wait(autojump_clock: trio.abc.Clock) -> None:
    control, _, took = await asked(None)
    assert control.cancel_remote is False and took == DETACH_AFTER


async def test_a_second_ctrl_c_detaches_at_once(autojump_clock: trio.abc.Clock) -> None:
    control, _, took = await asked(None, again_after=0.5)
    assert control.cancel_remote is False and took == 0.5


async def test_nothing_is_asked_without_remote_batches_running(autojump_clock: trio.abc.Clock) -> None:
    control, said, took = await asked("c", running=0)
    assert control.cancel_remote is None and said == [] and took == 0


@pytest.fixture
def fake_api() -> Iterator[str]:
    """The fake Message Batches API in its own process (batches end after 10 minutes)."""
    yield from fake_batches_process(ENV, "--processing", "600")


def job_file(tmp_path: Path, base_url: str) -> None:
    jobs = "\n".join(f'[[jobs]]\nid = "j{n}"\nprompt = "q{n}"\n' for n in range(3))
    (tmp_path / "jobs.toml").write_text(
        f'[defaults]\nbackend = "anthropic-batch"\nmodel = "claude-haiku-4-5"\nconcurrency = 100\n\n'
        f'[backends.anthropic-batch]\nbase_url = "{base_url}"\nbatch_linger = 0.2\npoll_min = 0.2\n'
        f"poll_max = 0.5\n\n{jobs}"
    )


class Terminal:
    """``orchestrate`` with a pty as its terminal; everything it writes is kept in ``output``."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=cwd,
            env=ENV,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        self.output = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def wait_for(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"never saw {text!r} in {self.output[-2000:]!r}"
            assert self.proc.poll() is None or text in self.output, "the command ended"
            time.sleep(0.05)

    def finish(self) -> int:
        code = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        os.close(self.master)
        return code


def wait_for_batch(log: Path, proc: subprocess.Popen[bytes]) -> None:
    while not log.exists() or b'"batch_submitted"' not in log.read_bytes():
        assert proc.poll() is None, "the run ended before it was interrupted"
        time.sleep(0.05)


def stopped(log: Path) -> list[str]:
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    return [r["action"] for r in records if r.get("kind") == "batch_stopped"]


def cancels(base_url: str) -> list[str]:
    with urllib.request.urlopen(base_url + CANCELS, timeout=30) as answer:
        result: list[str] = orjson.loads(answer.read())
    return result


def asked_on_ctrl_c(tmp_path: Path, fake_api: str, log: Path) -> Terminal:
    """A run on a terminal, its batch submitted, sent Ctrl-C: the question is on the screen."""
    job_file(tmp_path, fake_api)
    terminal = Terminal(["jobs.toml", "--log", str(log)], tmp_path)
    wait_for_batch(log, terminal.proc)
    # The progress line shows the batch once it is delivered past the log's fsync: asked before
    # that, the command knows of no remote batch yet, and does not ask.
    terminal.wait_for(b"remote batch")
    terminal.proc.send_signal(signal.SIGINT)
    terminal.wait_for(b"[c]ancel them?")
    return terminal


def test_ctrl_c_on_a_terminal_asks_and_c_cancels_the_remote_batches(tmp_path: Path, fake_api: str) -> None:
    log = tmp_path / "run.jsonl"
    terminal = asked_on_ctrl_c(tmp_path, fake_api, log)
    os.write(terminal.master, b"c\n")
    assert terminal.finish() == 130
    assert stopped(log) == ["cancel"] and len(cancels(fake_api)) == 1
    assert b"cancelling the 1 remote batch" in terminal.output


def test_a_second_ctrl_c_at_the_question_detaches_now(tmp_path: Path, fake_api: str) -> None:
    log = tmp_path / "run.jsonl"
    terminal = asked_on_ctrl_c(tmp_path, fake_api, log)
    terminal.proc.send_signal(signal.SIGINT)
    assert terminal.finish() == 130
    assert stopped(log) == ["detach"] and cancels(fake_api) == []
    assert b"leaving the 1 remote batch running" in terminal.output


def test_without_a_terminal_the_flag_decides(tmp_path: Path, fake_api: str) -> None:
    job_file(tmp_path, fake_api)
    for name, flags, action in (("detach", [], "detach"), ("cancel", ["--cancel-remote"], "cancel")):
        log = tmp_path / f"{name}.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "jobs.toml", "--log", str(log), *flags],
            cwd=tmp_path,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_batch(log, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and b"[c]ancel them?" not in err
        assert stopped(log) == [action]
    assert len(cancels(fake_api)) == 1
