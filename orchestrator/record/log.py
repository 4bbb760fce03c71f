"""The JSONL event log: written by one subscriber on the bus, read back for resume and reports.

Layout: a header line (``"kind": "log_header"``) opens each run, then one line per tagged event.
A resumed run appends a new header and its events to the same file.

Durability: with ``fsync="terminal"`` (the default) every batch holding a job's terminal event
is flushed and fsynced before the bus hands it to anyone else, so a job never counts as done
before its result is on disk. ``"always"`` fsyncs every batch; ``"never"`` leaves it to the OS.
Every batch is at least written to the OS, so ``orchestrate tail`` sees it at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import orjson
import trio

from orchestrator import codec
from orchestrator.events import TERMINAL_EVENTS, Tagged

HEADER_KIND = "log_header"


@attrs.frozen
class LogHeader:
    """The first line of a run in the log."""

    schema: int
    version: str
    run_id: str
    started_at: str
    job_file: str | None
    jobs: int
    settings: Mapping[str, Any]
    already_done: int = 0


class LogWriter:
    """A bus subscriber appending every event to a file (or standard output for ``"-"``).

    Writes happen on the bus task; fsync runs in a worker thread so other tasks keep going.
    """

    def __init__(self, target: str, fsync: str = "terminal") -> None:
        self.target = target
        self.fsync = fsync
        self._file: BinaryIO | None = None
        self._owned = target != "-"

    def open(self, header: LogHeader) -> None:
        """Open (append) and write the run header. Raises OSError if the file cannot be opened."""
        if self._owned:
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            _drop_torn_tail(path)
            self._file = open(path, "ab", buffering=0)
        else:
            self._file = sys.stdout.buffer
        self._write(orjson.dumps({"kind": HEADER_KIND, **codec.to_jsonable(header)}) + b"\n")

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:  # a raw file may write less than asked
            written = self._file.write(view)
            view = view[written or 0 :]
        if not self._owned:
            self._file.flush()

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        encode = codec.encode_tagged
        self._write(b"".join([encode(t) for t in batch]))
        if self._owned and self.fsync != "never":
            if self.fsync == "always" or any(isinstance(t.event, TERMINAL_EVENTS) for t in batch):
                assert self._file is not None
                await trio.to_thread.run_sync(os.fsync, self._file.fileno())

    def close(self) -> None:
        if self._file is not None and self._owned:
            try:
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
        self._file = None


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line left by a crash, so an appended run starts on a line of its own."""
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return
    with f:
        size = f.seek(0, os.SEEK_END)
        step = 1 << 16
        start = max(0, size - step)
        cut = -1
        while size:
            f.seek(start)
            cut = f.read(size - start).rfind(b"\n")
            if cut >= 0 or start == 0:
                break
            start = max(0, start - step)
        keep = start + cut + 1 if cut >= 0 else 0
        if keep < size:
            f.seek(keep)
            tail = f.read()
            try:
                orjson.loads(tail)
            except orjson.JSONDecodeError:
                f.truncate(keep)  # a torn line: the crash cut it, nothing can use it
            else:
                f.seek(size)  # a whole record whose newline was lost: readers count it, keep it
                f.write(b"\n")


@attrs.frozen
class LogRecord:
    """One line read back from a log: a run header or a tagged event."""

    line: int
    header: LogHeader | None = None
    tagged: Tagged | None = None


class LogError(ValueError):
    """A log line that is not valid (other than a torn last line)."""


def read_log(path: str | Path) -> Iterator[LogRecord]:
    """Every header and event in the log, in order, read one line at a time (memory does not
    grow with the log).

    A torn last line (a crash mid-write: no final newline and not valid JSON) is skipped.
    Any other bad line raises :class:`LogError` naming the file and line.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            record = _record(path, number, raw, torn=not raw.endswith(b"\n"))
            if record is not None:
                yield record


def _record(path: str | Path, number: int, raw: bytes, *, torn: bool) -> LogRecord | None:
    """One line as a record; None for a blank line or a torn last line (``torn``: no newline,
    which only the last line can lack)."""
    if not raw.strip():
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if torn:
            return None
        raise LogError(f"{path}: line {number}: invalid JSON: {exc}") from None
    try:
        if obj.get("kind") == HEADER_KIND:
            fields = {k: v for k, v in obj.items() if k != "kind"}
            return LogRecord(number, header=codec.structure(fields, LogHeader))
        return LogRecord(number, tagged=codec.decode_tagged(obj))
    except Exception as exc:
        if torn:
            return None
        raise LogError(f"{path}: line {number}: {exc}") from None
