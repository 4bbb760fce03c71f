"""``orchestrate tail LOG``: follow a batch's log and print each event as it is appended.

It prints the log from its start, then every line appended after, one short line per event
(time, job, attempt, kind, a little text), and stops at the batch's ``batch_finished`` event
when nothing follows it (a finished log prints and exits; a resumed run appending to the log
keeps it going), or on Ctrl-C (exit 130, quietly).

Only complete lines are printed: the writer appends whole lines, but a reader can catch one
half written, so the bytes after the last newline wait for the rest. Plain polling (every
``--interval`` seconds, 0.05 by default) rather than inotify: it works on every filesystem and
costs one ``read`` call per interval. A log that does not exist yet is waited for.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import orjson

from orchestrator import codec
from orchestrator.events import (
    AttemptStarted,
    BatchFinished,
    BatchStarted,
    Event,
    JobCancelled,
    JobDeduplicated,
    JobFailed,
    JobQueued,
    JobSkipped,
    JobsSkipped,
    JobSucceeded,
    RetryScheduled,
    SessionStarted,
    StreamFinished,
    StreamWarning,
    SystemNotice,
    Tagged,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    UsageReported,
)
from orchestrator.record.lines import THEN, LogLines
from orchestrator.record.log import HEADER_KIND
from orchestrator.visible import visible

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
SHORT = 72
"""Longest bit of text shown for one event."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate tail",
        description="Follow a batch's JSONL log: print every event as it is appended, until the batch "
        "finishes or Ctrl-C.",
    )
    parser.add_argument("log", metavar="LOG", help="the event log a running (or finished) batch writes")
    parser.add_argument("--no-deltas", action="store_true", help="leave out text and thinking deltas")
    parser.add_argument("--job", metavar="ID", help="only this job's events")
    parser.add_argument(
        "--interval", type=float, default=0.05, metavar="S", help="seconds between polls (default 0.05)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tail`` subcommand; returns the exit code (0 finished, 2 usage, 130 Ctrl-C)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.interval > 0:
        print("orchestrate tail: --interval must be > 0", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout

    def keep(tagged: Tagged) -> bool:
        if args.no_deltas and isinstance(tagged.event, TextDelta | ThinkingDelta):
            return False
        return args.job is None or tagged.job_id == args.job

    def emit(lines: list[str]) -> None:
        out.write("".join(line + "\n" for line in lines))
        out.flush()

    try:
        return follow(args.log, emit, keep=keep, interval=args.interval)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `orchestrate tail LOG | head`: the reader has gone, so have we
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_OK
    except (IsADirectoryError, PermissionError) as exc:
        print(f"orchestrate tail: {args.log}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE


def follow(
    path: str,
    emit: Callable[[list[str]], None],
    *,
    keep: Callable[[Tagged], bool] = lambda _: True,
    interval: float = 0.05,
    errors: IO[str] = sys.stderr,
) -> int:
    """Print ``path``'s events through ``emit`` (a list of lines per read) until the batch ends.

    Returns 0 once the last complete line is ``batch_finished`` and nothing follows it. Raises
    KeyboardInterrupt on Ctrl-C; never returns otherwise.
    """
    waited = False
    while not os.path.exists(path):
        if not waited:
            print(f"orchestrate tail: waiting for {path} to appear", file=errors, flush=True)
            waited = True
        time.sleep(interval)
    with open(path, "rb") as f:
        pending = b""
        finished = False
        number = 0
        decoder = LogLines()  # a line leaves out what earlier lines say: read every one in order
        while True:
            at = f.tell() - len(pending)  # where the line read in part starts
            chunk = f.read(1 << 20)
            shrunk = not chunk and os.stat(path).st_size < f.tell()
            if pending and (chunk or shrunk) and _cut(f, pending, at):
                # A resumed run cut the torn last line of a killed one and appends from there.
                f.seek(at)
                pending = b""
                continue
            if not chunk:
                if finished and not pending:
                    return EXIT_OK
                if shrunk:  # truncated under us: start over
                    f.seek(0)
                    pending, number, decoder = b"", 0, LogLines()
                time.sleep(interval)
                continue
            pending += chunk
            *complete, pending = pending.split(b"\n")
            lines: list[str] = []
            for raw in complete:
                number += 1
                if not raw.strip():
                    continue
                described, finished = _describe_line(raw, number, keep, decoder)
                lines.extend(described)
            if lines:
                emit(lines)


def _cut(f: IO[bytes], pending: bytes, at: int) -> bool:
    """Whether the file no longer holds ``pending`` (a line read in part) at offset ``at``."""
    return os.pread(f.fileno(), len(pending), at) != pending


def _describe_line(
    raw: bytes, number: int, keep: Callable[[Tagged], bool], decoder: LogLines
) -> tuple[list[str], bool]:
    """The printed lines for one log line (one per record it holds that ``keep`` keeps) and
    whether it ends a batch. Everything in them from the log is :func:`~orchestrator.visible.visible`."""
    lines, finished = _describe_raw(raw, number, keep, decoder)
    return [visible(line) for line in lines], finished


def _describe_raw(
    raw: bytes, number: int, keep: Callable[[Tagged], bool], decoder: LogLines
) -> tuple[list[str], bool]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [f"{'':>9}  line {number}: not JSON: {_short(raw.decode(errors='replace'))}"], False
    if not isinstance(obj, dict):
        return [f"{'':>9}  line {number}: not a log line"], False
    if obj.get("kind") == HEADER_KIND:
        decoder.restart()
        return [
            f"{'':>9}  ── run {obj.get('run_id')} started {obj.get('started_at')}: "
            f"{obj.get('jobs')} jobs from {obj.get('job_file') or '?'}"
        ], False
    try:
        records = decoder.decode_each(obj)
    except codec.DecodeError as exc:  # the line's job or then list: nothing in it can be read
        return [_undecoded(obj, exc)], False
    then: list[Any] = obj.get(THEN) or []  # a list: decode_each refuses any other
    finished = False
    lines = []
    for index, tagged in enumerate(records):
        if isinstance(tagged, codec.DecodeError):
            # A kind from a newer version, say: show what the record says rather than stop following.
            finished = False
            lines.append(_undecoded_item(obj, then[index - 1], tagged) if index else _undecoded(obj, tagged))
            continue
        finished = isinstance(tagged.event, BatchFinished)
        if keep(tagged) or finished:
            lines.append(
                _format(tagged.ts, tagged.job_id, tagged.attempt, tagged.event.kind, describe(tagged.event))
            )
    return lines, finished


def _undecoded(obj: dict[str, Any], exc: codec.DecodeError) -> str:
    return _format(
        obj.get("ts"), obj.get("job"), obj.get("attempt"), str(obj.get("kind")), f"(undecoded: {exc})"
    )


def _undecoded_item(obj: dict[str, Any], item: Any, exc: codec.DecodeError) -> str:
    """A record of a line's ``then`` list that does not decode: its kind as the item states it."""
    kind = item[0] if type(item) is list and item else item
    return _format(None, obj.get("job"), None, str(kind), f"(undecoded: {exc})")


def _format(ts: Any, job: Any, attempt: Any, kind: str, text: str) -> str:
    when = f"{ts:9.3f}" if isinstance(ts, int | float) else f"{'?':>9}"
    who = job if isinstance(job, str) else "-"
    number = f"#{attempt}" if isinstance(attempt, int) and attempt else ""
    return f"{when}  {who:<16} {number:>3}  {kind:<16} {text}".rstrip()


def describe(event: Event) -> str:
    """A short human description of one event (at most about :data:`SHORT` characters of text)."""
    match event:
        case TextDelta(text=text) | ThinkingDelta(text=text):
            return _short(repr(text))
        case JobQueued():
            return event.backend + (f" {event.model}" if event.model else "")
        case AttemptStarted(backend=backend):
            return backend
        case SessionStarted():
            return f"{event.session_id or '?'} {event.model or ''}".rstrip()
        case ToolCall():
            return _short(f"{event.name} {_json(event.input)}")
        case ToolResult():
            return _short(("(error) " if event.is_error else "") + event.content)
        case UsageReported(tokens=t):
            return f"{t.input} in, {t.output} out"
        case StreamFinished():
            tokens = f", {event.tokens.input} in, {event.tokens.output} out" if event.tokens else ""
            cost = f", ${event.cost_usd:.6f}" if event.cost_usd is not None else ""
            return f"{event.stop_reason or '-'}{tokens}{cost}"
        case SystemNotice():
            return _short(f"{event.subtype} {_json(event.data)}")
        case StreamWarning(message=message):
            return _short(message)
        case RetryScheduled():
            return _short(f"retry in {event.delay_s:.2f}s after {event.error_kind}: {event.message}")
        case JobDeduplicated(leader=leader):
            return _short(f"the request of {leader}, sent once: ends with its outcome")
        case JobSucceeded(attempts=attempts):
            return f"after {attempts} attempt(s)"
        case JobFailed():
            return _short(f"{event.error_kind}: {event.message}")
        case JobCancelled(reason=reason) | JobSkipped(reason=reason):
            return reason
        case JobsSkipped(count=count, reason=reason):
            return _short(f"{count} job(s) never started: {reason}")
        case BatchStarted():
            return f"run {event.run_id}, {event.jobs} jobs"
        case BatchFinished(summary=s):
            stopped = f", stopped: {s.stopped}" if s.stopped else ""
            return f"{s.succeeded}/{s.jobs} succeeded, {s.failed} failed, {s.wall_s:.2f}s{stopped}"
        case _:
            return _short(_json({k: v for k, v in codec.event_to_dict(event).items() if k != "kind"}))


def _json(value: Mapping[str, Any] | Any) -> str:
    return orjson.dumps(codec.to_jsonable(value), option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def _short(text: str) -> str:
    text = visible(text)
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"
