"""The Claude Code CLI's stdout, a byte stream, cut into lines for the decoder.

Pure: chunks in, complete lines out. The process shell in :mod:`.backend` reads stdout in
chunks of whatever size the pipe gives and feeds them here; :class:`~.decode.ClaudeDecoder`
takes the lines, and reads each with :func:`parse_line`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# A \uD800-\uDFFF escape: the only thing the fallback parse of parse_line is there for.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class LineSplitter:
    """Cuts a byte stream into lines, however it arrives in chunks.

    No length limit: a line can be megabytes (a big reply or tool result). Each byte is scanned
    for a newline once, so a long line arriving in many small chunks costs linear time. Chunk
    boundaries may fall anywhere, inside a multi-byte character included: lines stay bytes.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # no newline in _buffer[:_scanned]

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete lines ``chunk`` finishes, without their ``\\n`` (or ``\\r\\n``)."""
        buffer = self._buffer
        buffer += chunk
        lines: list[bytes] = []
        start = 0
        end = buffer.find(b"\n", self._scanned)
        while end != -1:
            lines.append(_strip_cr(bytes(buffer[start:end])))
            start = end + 1
            end = buffer.find(b"\n", start)
        del buffer[:start]
        self._scanned = len(buffer)
        return lines

    def finish(self) -> list[bytes]:
        """The last line, if the stream ended without a newline; the splitter is then empty."""
        rest, self._buffer, self._scanned = bytes(self._buffer), bytearray(), 0
        return [_strip_cr(rest)] if rest else []


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


def parse_line(line: bytes | str) -> Any:
    """The JSON value of one line. Raises :class:`ValueError` when it is not JSON.

    A lone UTF-16 surrogate escape (``"\\ud83d"``: the CLI splits an emoji between two stream
    chunks and escapes each half) is not valid text, so a strict parser refuses the whole line and
    its text or tool result with it. Such a line is read anyway, each lone surrogate replaced by
    U+FFFD; a surrogate pair stays the character it encodes.
    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
        if _SURROGATE_ESCAPE.search(raw) is None:
            raise
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)  # keeps lone surrogates as they are
    except (RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    return _without_lone_surrogates(value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: orjson refuses them, so do we


def _without_lone_surrogates(value: Any) -> Any:
    # Iterative: a deeply nested line must not exhaust the stack.
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if not isinstance(value, (dict, list)):
        return value
    root: list[Any] = [value]
    todo: list[tuple[Any, Any]] = [(root, 0)]
    while todo:
        container, key = todo.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = _SURROGATE.sub("\ufffd", item)
        elif isinstance(item, list):
            todo.extend((item, i) for i in range(len(item)))
        elif isinstance(item, dict):
            fixed = {_SURROGATE.sub("\ufffd", k): v for k, v in item.items()}
            container[key] = fixed
            todo.extend((fixed, k) for k in fixed)
    return root[0]
