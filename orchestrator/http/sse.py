"""Server-sent events: body bytes in, complete events out. Pure: no I/O, no clock.

Follows the WHATWG "interpreting an event stream" rules:

* a line ends in CRLF, LF or CR, including a CRLF split across two feeds;
* one leading UTF-8 byte order mark is dropped;
* lines starting with ``:`` are comments;
* ``field:value`` takes one optional space after the colon; a line without a colon is a field
  with an empty value; unknown fields are ignored, except ``error`` (older llama.cpp servers send
  a failure as an ``error:`` line): its value is data, and the event it ends is an ``error`` event;
* ``data`` lines of one event are joined with ``\\n``; a blank line dispatches the event; an
  event without ``data`` is not dispatched (its ``id`` and ``retry`` still count);
* an ``id`` containing NUL is ignored; the last id persists from event to event;
* ``retry`` counts only when it is all ASCII digits.

Text is decoded as UTF-8 once per complete event, so a character split across feeds comes out
whole (line ends are ASCII and never occur inside a multi-byte sequence, so cutting lines on
bytes first is safe); invalid UTF-8 becomes U+FFFD, as the standard says.

At the end of the stream a partly received event is dropped (as the standard says);
:attr:`SSEDecoder.has_partial` tells the caller it happened, a sign of a truncated stream.
"""

from __future__ import annotations

from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """A line or an event is larger than the decoder's limit."""


class ServerSentEvent(NamedTuple):
    """One dispatched event. ``retry`` is set only on the event that carried it.

    A named tuple rather than a frozen class: one is built per streamed token, and a tuple is
    the cheapest immutable value Python can build.
    """

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Feed body bytes in any pieces with :meth:`feed`; get the events they complete.

    ``max_event_bytes`` bounds one unterminated line and the data of one event, so a broken
    peer cannot make the decoder buffer without limit (:class:`SSEError`).
    """

    __slots__ = (
        "_data",
        "_data_size",
        "_error",
        "_event",
        "_pending",
        "_retry",
        "_skip_lf",
        "_started",
        "last_event_id",
        "max_event_bytes",
        "retry",
    )

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self.max_event_bytes = max_event_bytes
        self._pending = b""  # an unterminated line
        self._skip_lf = False  # the last feed ended in CR: a leading LF of the next one belongs to it
        self._started = False  # the BOM check is done
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = ""
        self._error = False
        self._retry: int | None = None
        self.last_event_id = ""
        """The last ``id`` seen; it persists across events."""
        self.retry: int | None = None
        """The last valid ``retry`` value (milliseconds); it persists."""

    @property
    def has_partial(self) -> bool:
        """Whether bytes of an event not yet dispatched are held."""
        return bool(self._pending or self._data or self._event)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next piece of the body; return the events it completes (maybe none)."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if not chunk:
            return []
        if self._pending:
            chunk = self._pending + chunk
            self._pending = b""
        if not self._started:
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._pending = chunk  # maybe the start of a BOM: wait for more
                return []
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if b"\r" in chunk:
            # bytes.splitlines splits on exactly CRLF, LF and CR, the SSE set (str.splitlines
            # would also split on U+2028 and friends, which are data here).
            raw_lines = chunk.splitlines(keepends=True)
            last = raw_lines[-1][-1]
            if last == 0x0D:
                self._skip_lf = True  # a following LF belongs to this CR
            elif last != 0x0A:
                self._pending = raw_lines.pop()
            lines = [line.rstrip(b"\r\n") for line in raw_lines]
        else:  # the common case, and the fast one: LF only
            lines = chunk.split(b"\n")
            self._pending = lines.pop()  # b"" when the chunk ends with a line end
        if len(self._pending) > self.max_event_bytes:
            raise SSEError("an SSE line is longer than max_event_bytes")
        out: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append(self._dispatch())
                else:
                    self._event = ""
                    self._retry = None
                continue
            if line[0] == 0x3A:  # ':' starts a comment
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
                self._data_size += len(value) + 1
                if self._data_size > self.max_event_bytes:
                    raise SSEError("an SSE event is larger than max_event_bytes")
            elif name == b"error":
                # Not in the standard: older llama.cpp servers send a failure as an ``error:`` line
                # (then ``data: [DONE]``). Read it as the data of an ``error`` event, not dropped.
                self._data.append(value)
                self._data_size += len(value) + 1
                self._error = True
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\x00" not in value:
                    self.last_event_id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():  # bytes.isdigit is ASCII only
                self._retry = self.retry = int(value)
        return out

    def _dispatch(self) -> ServerSentEvent:
        data = self._data
        raw = data[0] if len(data) == 1 else b"\n".join(data)
        name = "error" if self._error else self._event or "message"
        event = ServerSentEvent(raw.decode("utf-8", "replace"), name, self.last_event_id, self._retry)
        self._data = []
        self._data_size = 0
        self._event = ""
        self._error = False
        self._retry = None
        return event
