"""Where an HTTP/1.1 response body ends: chunked, Content-Length, or the connection's end.

Pure decoders (bytes in, body bytes out, no I/O). h11 parses the response head; the body is
framed here because h11's pure-Python chunk parser was ~40 % of the client's CPU on streamed
replies (three ``next_event`` calls per SSE event). Each decoder is driven the same way::

    body = framing.feed(data)   # the body bytes inside data (maybe b"")
    framing.done                # the body has ended
    framing.trailing            # bytes received after the end (another response: not ours)

After ``done`` every further byte fed goes to ``trailing``.
"""

from __future__ import annotations

from orchestrator.http.errors import RemoteProtocolError

MAX_LINE = 4096
"""Longest chunk-size line (with extensions) or trailer line accepted."""
MAX_TRAILERS = 64 * 1024

_HEX_DIGITS = b"0123456789abcdefABCDEF"
# Chunked decoder states.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Decodes ``Transfer-Encoding: chunked`` (RFC 9112 section 7.1).

    Accepts chunk extensions (ignored), trailers (skipped), and a bare LF where CRLF belongs
    (as most clients do). Raises :class:`RemoteProtocolError` on a size that is not hex, a line
    longer than :data:`MAX_LINE`, or a chunk whose data is not followed by a line end.
    """

    __slots__ = ("_pending", "_remaining", "_state", "_trailer_bytes", "trailing")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._pending = b""  # an unfinished size, CRLF or trailer line
        self._trailer_bytes = 0
        self.trailing = b""

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """The body bytes carried by ``data`` (any split of the stream gives the same body)."""
        if self._state == _SIZE and not self._pending:
            # Fast path: a streamed reply usually arrives as exactly one whole chunk per read.
            newline = data.find(b"\n", 0, 18)
            if newline > 1 and data[newline - 1] == 0x0D:
                size_text = data[: newline - 1]
                if not size_text.translate(None, _HEX_DIGITS):
                    start = newline + 1
                    stop = start + int(size_text, 16)
                    if stop > start and len(data) == stop + 2 and data.endswith(b"\r\n"):
                        return data[start:stop]
        if self._pending:
            data = self._pending + data
            self._pending = b""
        out: list[bytes] = []
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            if state == _DONE:
                self.trailing += data[pos:]
                break
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._pending = data[pos:]
                if len(self._pending) > MAX_LINE:
                    raise RemoteProtocolError("chunked body: line too long")
                break
            line = data[pos:newline]
            pos = newline + 1
            if line[-1:] == b"\r":
                line = line[:-1]
            if state == _SIZE:
                size = _chunk_size(line)
                if size:
                    self._state, self._remaining = _DATA, size
                else:
                    self._state = _TRAILER
            elif state == _DATA_END:
                if line:
                    raise RemoteProtocolError("chunked body: chunk data longer than its size")
                self._state = _SIZE
            elif not line:  # the blank line after the trailers ends the body
                self._state = _DONE
            else:
                self._trailer_bytes += len(line)
                if self._trailer_bytes > MAX_TRAILERS:
                    raise RemoteProtocolError("chunked body: trailers too large")
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip(b" \t")
    # Only hex digits: int() alone would also take "0x", "_", signs and spaces.
    if not size or len(size) > 16 or size.translate(None, _HEX_DIGITS):
        shown = line[:40].decode("ascii", "replace")
        raise RemoteProtocolError(f"chunked body: bad chunk size line {shown!r}")
    return int(size, 16)


class LengthDecoder:
    """A body of ``Content-Length`` bytes."""

    __slots__ = ("_remaining", "trailing")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self.trailing = b""

    @property
    def done(self) -> bool:
        return self._remaining == 0

    def feed(self, data: bytes) -> bytes:
        take = min(self._remaining, len(data))
        self._remaining -= take
        if take < len(data):
            self.trailing += data[take:]
        return data if take == len(data) else data[:take]


class UntilCloseDecoder:
    """A body that ends when the server closes the connection (no length given).

    The transport calls :meth:`close` at end of file; the connection is then never reused.
    """

    __slots__ = ("done", "trailing")

    def __init__(self) -> None:
        self.done = False
        self.trailing = b""

    def feed(self, data: bytes) -> bytes:
        return data

    def close(self) -> None:
        self.done = True


BodyDecoder = ChunkedDecoder | LengthDecoder | UntilCloseDecoder
