"""The Claude Code CLI's stdout, a byte stream, cut into lines for the decoder.

Pure: chunks in, complete lines out. The process shell in :mod:`.backend` reads stdout in
chunks of whatever size the pipe gives and feeds them here; :class:`~.decode.ClaudeDecoder`
takes the lines.
"""

from __future__ import annotations


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
