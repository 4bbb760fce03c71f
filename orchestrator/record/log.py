"""The JSONL event log: written by one subscriber on the bus, read back for resume and reports.

Layout: a header line (``"kind": "log_header"``) opens each run, then its tagged events: a run
of text (or thinking) deltas of one attempt is one record, and records of one job that follow
one another share a line (see :mod:`~orchestrator.record.coalesce`). A line leaves out what a
reader can fill back in (fields at their defaults, what earlier records of the job say: see
:mod:`~orchestrator.record.lines`), so lines are read in order, each run from its header. A
resumed run appends a new header and its events to the same file.

Durability: with ``fsync="terminal"`` (the default) every batch holding a job's terminal event
(or another of :data:`~orchestrator.events.DURABLE_EVENTS`: a remote batch's intent and id) is
flushed and fsynced before the bus hands it to anyone else, so a job never counts as done
before its result is on disk. Fsyncs start at least :data:`COMMIT_INTERVAL` apart, each
covering every event that arrived meanwhile (group commit). ``"always"`` writes and fsyncs every
event with its batch (nothing is held back for a shared line); ``"never"`` leaves it to the OS.
Every line is written to the OS as soon as it is due, so ``orchestrate tail`` sees it at once.

What counts as a log (one rule for every reader and the writer, see :func:`read_objects`): an
empty file, or a file whose first line is one of our headers (or the start of one, cut by a
crash). Anything else (a job file, a prompts file) is refused and never modified. A failed
write (a full disk) raises :class:`LogWriteError`, which ends the run.
"""

from __future__ import annotations

import errno
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import attrs
import orjson

from orchestrator import codec
from orchestrator.events import DURABLE_EVENTS, Tagged
from orchestrator.record.coalesce import HOLD_S, HeldLines
from orchestrator.record.lines import LogLines

HEADER_KIND = "log_header"
_HEADER_START = b'{"kind":"log_header"'  # how every header we write begins
COMMIT_INTERVAL = 0.01
"""Seconds from one fsync's start to the next one's at the least: under a stream of finishing
jobs, one fsync per 10 ms covers them all; after a quiet spell, a terminal event is fsynced at once."""
_WRITE_CHUNK = 1024  # log lines per write
_HEADER_LIMIT = 1 << 24  # bytes of line 1 read to find the header (a file without newlines ends early)


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
    job_path: str | None = None
    """The job file's resolved path: which batch the log belongs to (None: a library batch)."""


class LogWriter:
    """A bus subscriber appending every event to a file (or standard output for ``"-"``).

    Writes happen on the bus task; fsync runs in a worker thread so other tasks keep going.
    """

    def __init__(self, target: str, fsync: str = "terminal") -> None:
        self.target = target
        self.fsync = fsync
        self._file: BinaryIO | None = None
        self._owned = target != "-"
        self.failed = False  # a write failed: the file may end in a cut line, and the disk be full
        # "always" asks for every event on disk with its batch: nothing waits for a shared line.
        self._held = HeldLines(0.0 if fsync == "always" else HOLD_S)
        self._lines = LogLines()
        self._last_fsync = -math.inf  # trio time the last fsync started

    def open(self, header: LogHeader) -> None:
        """Open (append) and write the run header. Raises OSError if the file cannot be opened,
        :class:`LogError` (without touching it) if the file is not a log."""
        if self._owned:
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            first_header(path)
            _drop_torn_tail(path)
            self._file = open(path, "ab", buffering=0)
        else:
            self._file = sys.stdout.buffer
        self._lines.restart()
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
        """Append the batch, a job's records that follow one another on one line and runs of
        deltas joined (see :mod:`~orchestrator.record.coalesce`), and fsync it when it holds a
        terminal (or another durable) event, or always, or never, per ``fsync``.

        Fsyncs start at least :data:`COMMIT_INTERVAL` apart: a batch that must be fsynced sooner
        waits, and the bus with it (the events sent meanwhile wait in its channel and make the
        next batch, which one fsync then covers), so finishing jobs share fsyncs as a database's
        transactions share a group commit, and still no one sees a terminal event before it is
        on disk.

        Raises :class:`LogWriteError` when the write fails: nothing after that can be recorded,
        so the run must end. What was written before stays valid; a line cut by the failure
        is a torn tail that the next run (``--resume``) cuts.
        """
        import trio  # here, not at the top: a report reads logs without it (a tenth of its start-up)

        encode = self._lines.encode_line
        try:
            lines = self._held.feed(batch)
            # A write per chunk of lines, not per batch: the memory of a whole batch's lines
            # would be mapped and given back to the system for each batch (page faults cost
            # more system time than the lines' encoding).
            for start in range(0, len(lines), _WRITE_CHUNK):
                self._write(b"".join([encode(line) for line in lines[start : start + _WRITE_CHUNK]]))
            if self._owned and self.fsync != "never":
                if self.fsync == "always" or any(isinstance(t.event, DURABLE_EVENTS) for t in batch):
                    assert self._file is not None
                    due = self._last_fsync + COMMIT_INTERVAL
                    if trio.current_time() < due:
                        await trio.sleep_until(due)
                    self._last_fsync = trio.current_time()
                    await trio.to_thread.run_sync(os.fsync, self._file.fileno())
        except OSError as exc:
            self.failed = True
            raise LogWriteError(self.target, exc) from None

    def close(self) -> None:
        """Fsync and close. After a failed write, close only (the disk may still be full)."""
        if self._file is not None and not self.failed:
            held = self._held.drain()  # records of attempts a torn-down run never ended
            if held:
                try:
                    self._write(b"".join([self._lines.encode_line(line) for line in held]))
                except OSError:
                    self.failed = True
        if self._file is not None and self._owned:
            try:
                if not self.failed:
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()
        self._file = None


class LogWriteError(OSError):
    """Writing the log failed mid-run (a full disk, an I/O error). ``str()`` is one line."""

    def __init__(self, log: str, cause: OSError) -> None:
        full = cause.errno in (errno.ENOSPC, errno.EDQUOT)
        what = "disk full" if full else f"cannot write ({cause.strerror or cause})"
        super().__init__(cause.errno, f"{what} writing {log}")
        self.log = log

    def __str__(self) -> str:
        return str(self.strerror)


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


class LogRecord(NamedTuple):
    """One line read back from a log: a run header or a tagged event. (A named tuple: a report
    reads one for every line.)"""

    line: int
    header: LogHeader | None = None
    tagged: Tagged | None = None


class LogError(ValueError):
    """A file that is not a log, or a log line that is not valid (other than a torn last line)."""


def _header_of(raw: bytes, torn: bool, path: str | Path) -> LogHeader | None:
    """The header on a log's first line; None for an empty file or a header cut by a crash.

    This is the rule that tells our logs from other files: anything else on line 1 (a job
    file, a prompts file, someone's notes) raises :class:`LogError`."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if torn and (_HEADER_START.startswith(raw) or raw.startswith(_HEADER_START)):
            return None  # empty, or the run died writing its header
        obj = None
    if not isinstance(obj, dict) or obj.get("kind") != HEADER_KIND:
        raise LogError(f"{path}: not a log written by orchestrate (line 1 is not a log header)")
    try:
        header: LogHeader = codec.structure({k: v for k, v in obj.items() if k != "kind"}, LogHeader)
    except Exception as exc:
        raise LogError(f"{path}: line 1: not a log header this version reads: {exc}") from None
    return header


def first_header(path: str | Path) -> LogHeader | None:
    """The header of an existing log (None: the file is missing, empty, or its header was cut by
    a crash). Reads only the first line. Raises :class:`LogError` if the file is not a log."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        raw = f.readline(_HEADER_LIMIT)
    torn = not raw.endswith(b"\n")
    return _header_of(raw.rstrip(b"\n"), torn, path)


def read_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every line of a log as a JSON object, with its line number: the rules every reader shares
    (report, resume, the writer's check).

    The file must be a log (see :func:`first_header`). Blank lines are skipped, and so is a torn
    last line (a crash mid-write: no final newline and not valid JSON). Any other line that is
    not a JSON object raises :class:`LogError` naming the file and line.
    """
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    with open(path, "rb") as f:
        first = f.readline()
        if first and _header_of(first.rstrip(b"\n"), not first.endswith(b"\n"), path) is None:
            return  # an empty log, or one whose header a crash cut: nothing follows it
        f.seek(0)
        for number, raw in enumerate(f, start=1):  # one line at a time: memory stays flat
            try:
                obj = loads(raw)  # orjson takes the newline and any blanks around the value
            except decode_error as exc:
                if not raw.strip():
                    continue
                if not raw.endswith(b"\n"):  # only the last line can lack its newline: torn
                    return
                raise LogError(f"{path}: line {number}: invalid JSON: {exc}") from None
            if type(obj) is not dict:
                raise LogError(f"{path}: line {number}: expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def read_log(path: str | Path) -> Iterator[LogRecord]:
    """Every header and event in the log, in order, read one line at a time (memory does not
    grow with the log; lines as :func:`read_objects` reads them).

    Raises :class:`LogError` naming the file and line for a line that is not a valid record.
    """
    lines = LogLines()
    for number, obj in read_objects(path):
        try:
            if obj.get("kind") == HEADER_KIND:
                fields = {k: v for k, v in obj.items() if k != "kind"}
                lines.restart()
                yield LogRecord(number, header=codec.structure(fields, LogHeader))
            else:
                for tagged in lines.decode_line(obj):
                    yield LogRecord(number, tagged=tagged)
        except Exception as exc:
            raise LogError(f"{path}: line {number}: {exc}") from None
