"""The Claude Code CLI's process: its pipes, and its end.

The I/O pieces :class:`~.backend.ClaudeCodeBackend` runs an attempt with: the prompt to stdin,
stdout read in chunks, stderr drained into a bounded tail, and the process group stopped and
reaped, whatever happens.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path

import trio

from orchestrator.redact import Redactor, environment_secrets

_CHUNK = 256 * 1024
_STDERR_BYTES = 16 * 1024
_STDERR_LINES = 20


def redact(text: str, env: Mapping[str, str]) -> str:
    """``text`` with the secrets of ``env`` hidden (see :func:`orchestrator.redact.environment_secrets`)."""
    return Redactor(environment_secrets(env)).text(text)


class StderrTail:
    """The last bytes of stderr, however much the CLI writes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = trio.Event()

    async def drain(self, stream: trio.abc.ReceiveStream) -> None:
        try:
            while chunk := await stream.receive_some(_CHUNK):
                self.data += chunk
                if len(self.data) > 2 * _STDERR_BYTES:
                    del self.data[:-_STDERR_BYTES]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.done.set()

    def text(self, env: Mapping[str, str]) -> str:
        """The last non-empty lines, secrets redacted."""
        lines = bytes(self.data[-_STDERR_BYTES:]).decode("utf-8", "replace").splitlines()
        return redact("\n".join([line for line in lines if line.strip()][-_STDERR_LINES:]), env)


class StdoutReader:
    """Reads stdout; once told to hurry (the CLI exited or printed its result), a read that waits
    longer than ``grace`` seconds counts as the end."""

    def __init__(self, stream: trio.abc.ReceiveStream, grace: float) -> None:
        self.stream = stream
        self.grace = grace
        self.hurry = False
        self._scope: trio.CancelScope | None = None

    async def receive(self) -> bytes:
        """The next chunk; ``b""`` at the end."""
        # A ReceiveStream may give a bytearray; a pipe gives bytes, which bytes() returns as is.
        while not self.hurry:
            # A cancelled receive_some consumes nothing, so hurry_up() can interrupt it safely.
            with trio.CancelScope() as self._scope:
                return bytes(await self.stream.receive_some(_CHUNK))
            self._scope = None
        with trio.move_on_after(self.grace):
            return bytes(await self.stream.receive_some(_CHUNK))
        return b""

    def hurry_up(self) -> None:
        self.hurry = True
        if self._scope is not None:
            self._scope.cancel()


async def send_prompt(stdin: trio.abc.SendStream, prompt: str) -> None:
    try:
        await stdin.send_all(prompt.encode("utf-8"))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the CLI is gone before reading it: its exit says why
    finally:
        await stdin.aclose()  # EOF: without it the CLI waits for more prompt forever


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendant_groups(pid: int) -> set[int]:
    """Process groups of ``pid``'s descendants outside its own group (Linux ``/proc``; else empty).

    The CLI runs each Bash tool in a session of its own; a SIGKILL to the CLI's group would not
    reach those, and with the CLI dead nothing would stop them.
    """
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return set()
    for entry in entries:
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2:
            children.setdefault(int(fields[1]), []).append((int(entry), int(fields[2])))
    groups: set[int] = set()
    todo = [pid]
    while todo:
        for child, pgid in children.get(todo.pop(), []):
            todo.append(child)
            if pgid != pid:
                groups.add(pgid)
    return groups


async def stop(process: trio.Process, grace: float) -> None:
    """End the CLI and reap it: SIGTERM to its group, SIGKILL (to it and its tools' groups) after
    ``grace`` seconds. Callers shield it, so it completes even when the attempt was cancelled."""
    if process.returncode is None:
        # Not reaped yet, so the group id cannot have been reused.
        _signal_group(process.pid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        stragglers = _descendant_groups(process.pid)
        _signal_group(process.pid, signal.SIGKILL)
        for pgid in stragglers:
            _signal_group(pgid, signal.SIGKILL)
        await process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()
