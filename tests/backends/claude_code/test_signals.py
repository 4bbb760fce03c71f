"""Ctrl-C and SIGTERM to a real `orchestrate` running the real Claude Code CLI: the batch stops
gracefully and no CLI process is left behind."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import trio

from orchestrator.record.log import read_log
from orchestrator.testing.anthropic.server import Stall, open_fake_anthropic

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def children(pid: int) -> set[int]:
    """Every live process whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_mid_stream_leaves_no_cli_running(
    signum: int,
    code: int,
    claude_cli: str,
    home: Path,
    tmp_path: Path,
) -> None:
    async with open_fake_anthropic(default=Stall(partial="Thinking about it")) as fake:
        job = tmp_path / "claude.toml"
        log = tmp_path / "run.jsonl"
        job.write_text(
            '[defaults]\nbackend = "claude-code"\nconcurrency = 2\n'
            "[defaults.claude-code]\nmax_retries = 0\ninclude_partial_messages = true\n"
            f'[backends.claude-code]\ncli = "{claude_cli}"\n'
            + "".join(f'[[jobs]]\nid = "j{i}"\nprompt = "question {i}"\n' for i in range(4))
        )
        env = {**os.environ, "HOME": str(home), "ANTHROPIC_BASE_URL": fake.base_url, "PYTHONPATH": str(ROOT)}
        async with trio.open_nursery() as nursery:
            command = [sys.executable, "-m", "orchestrator", str(job), "--log", str(log), "-q"]

            async def orchestrate(task_status: trio.TaskStatus[trio.Process]) -> None:
                await trio.run_process(
                    command,
                    env=env,
                    check=False,
                    capture_stdout=True,
                    capture_stderr=True,
                    task_status=task_status,
                )

            proc = await nursery.start(orchestrate)
            with trio.fail_after(60):
                # Another process's children: nothing to wait on but /proc itself.
                while len(children(proc.pid)) < 2 or len(fake.requests) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            clis = children(proc.pid)
            proc.send_signal(signum)
            # A hang guard, not a claim about speed: a CLI that ignores SIGTERM gets the 5 s
            # grace period before its SIGKILL, and a busy machine adds its own delays.
            with trio.fail_after(60):
                await proc.wait()
        assert proc.returncode == code
        assert not any(alive(pid) for pid in clis)
    finished = [r.tagged.event for r in read_log(log) if r.tagged][-1]
    assert (
        finished.kind == "batch_finished"
        and finished.summary.cancelled == 2
        and finished.summary.skipped == 2
    )
