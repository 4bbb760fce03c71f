"""One HTTP/1.1 connection and one request/response exchange on it.

h11 writes the request and parses the response head (the fiddly, security-relevant part:
header syntax, framing headers, status line). The body is framed by :mod:`.framing`, which is
much cheaper per streamed event than feeding h11 every chunk; keep-alive is decided here from
what h11 parsed: HTTP/1.1, no ``Connection: close``, a body with a known end, read to that end,
and nothing after it.
"""

from __future__ import annotations

import ssl

import h11
import trio

from orchestrator.http.errors import RemoteProtocolError, TransportError
from orchestrator.http.framing import BodyDecoder, ChunkedDecoder, LengthDecoder, UntilCloseDecoder

READ_SIZE = 65536
Headers = list[tuple[bytes, bytes]]


class StaleConnection(TransportError):
    """A reused keep-alive connection died before the server sent a byte of its response (the
    server closed it while it sat idle). The pool retries once on a new connection."""


class Connection:
    """A connected stream (TCP, maybe TLS, maybe through a proxy tunnel) to one origin.

    ``key`` is what the pool files it under; ``socket`` is the TCP socket, for the idle check.
    """

    __slots__ = ("key", "reused", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType, key: object) -> None:
        self.stream = stream
        self.socket = socket
        self.key = key
        self.reused = False

    def idle_healthy(self) -> bool:
        """An idle connection has nothing to read: readable means EOF, a reset or junk."""
        try:
            return not self.socket.is_readable()
        except OSError:
            return False

    async def aclose(self) -> None:
        """Close now, without a TLS goodbye. Never blocks and never raises ``Cancelled``, so it
        also closes the socket inside a cancelled scope (the shield cannot make it hang: the
        forceful close cancels its own graceful part)."""
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)


def describe_broken(exc: BaseException) -> str:
    """The reason behind a trio ``BrokenResourceError`` (it wraps the ``OSError``/``SSLError``)."""
    cause = exc.__cause__ or exc.__context__ or exc
    if isinstance(cause, ssl.SSLError | OSError) and cause.strerror:
        return cause.strerror
    return str(cause) or type(cause).__name__


class Response:
    """A response whose head has arrived; read the body with :meth:`receive_some`.

    Valid only inside the ``open_stream`` block that made it. ``headers`` have lower-case names.
    """

    __slots__ = (
        "_buffered",
        "_framing",
        "_receive",
        "complete",
        "headers",
        "http_version",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(
        self, connection: Connection, head: h11.Response, framing: BodyDecoder, buffered: bytes
    ) -> None:
        self.status: int = head.status_code
        self.reason: bytes = head.reason
        self.http_version: bytes = head.http_version
        self.headers: Headers = list(head.headers)
        self._receive = connection.stream.receive_some
        self._framing = framing
        self._buffered = buffered  # body bytes that arrived with the head
        self.keep_alive = head.http_version == b"1.1" and not _says_close(self.headers)
        self.complete = framing.done
        """True once the whole body has arrived."""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request."""
        return self.complete and self.keep_alive and not self._framing.trailing

    async def receive_some(self) -> bytes:
        """The next piece of the body as it arrives; ``b""`` once the body has ended.

        Raises :class:`RemoteProtocolError` when the connection breaks or closes mid-body or
        the framing is wrong. Cancellation is safe at any point: the body is then incomplete
        and the pool closes the connection.
        """
        framing = self._framing
        while not framing.done:
            if self._buffered:
                data, self._buffered = self._buffered, b""
            else:
                try:
                    # A Stream may give a bytearray; bytes() returns bytes as is (no copy).
                    data = bytes(await self._receive(READ_SIZE))
                except trio.BrokenResourceError as exc:
                    raise RemoteProtocolError(
                        f"connection lost mid-response: {describe_broken(exc)}"
                    ) from None
                if not data:
                    if type(framing) is UntilCloseDecoder:
                        framing.close()
                        break
                    raise RemoteProtocolError("server closed the connection before the response ended")
            body = framing.feed(data)
            if body:
                if framing.done:
                    self.complete = True
                return body
        self.complete = True
        return b""

    async def read_all(self, limit: int = 1 << 20) -> bytes:
        """The rest of the body (an error body, say); stops with what it has past ``limit``."""
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            data = await self.receive_some()
            if not data:
                break
            parts.append(data)
            size += len(data)
        return b"".join(parts)[:limit]

    def drain_buffered(self) -> None:
        """Finish the body without I/O if its end has already arrived (a caller that stops at
        ``[DONE]`` usually got the final chunk in the same read), so the connection is kept."""
        if self._buffered and not self.complete:
            data, self._buffered = self._buffered, b""
            self._framing.feed(data)
            self.complete = self._framing.done


async def exchange(connection: Connection, request: h11.Request, body: bytes) -> Response:
    """Send ``request`` with ``body`` and read the response head (1xx responses skipped).

    Raises :class:`StaleConnection` when a reused connection fails before any response byte,
    :class:`RemoteProtocolError` for any other break or malformed head.
    """
    conn = h11.Connection(h11.CLIENT)
    stream = connection.stream
    received = False
    try:
        await stream.send_all(
            conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        )
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(READ_SIZE)
                if not data and not received and connection.reused:
                    raise StaleConnection("keep-alive connection closed by the server")
                received = True
                conn.receive_data(data)  # type: ignore[arg-type]  # h11 takes any bytes-like; its hint says bytes
            elif type(event) is h11.Response:
                break
            elif type(event) is not h11.InformationalResponse:
                raise RemoteProtocolError("server closed the connection before responding")
    except trio.BrokenResourceError as exc:
        if connection.reused and not received:
            raise StaleConnection("keep-alive connection broken") from None
        raise RemoteProtocolError(f"connection lost before the response: {describe_broken(exc)}") from None
    except h11.RemoteProtocolError as exc:
        raise RemoteProtocolError(f"malformed response head: {exc}") from None
    buffered, _ = conn.trailing_data
    return Response(connection, event, _framing(request.method, event), buffered)


def _framing(method: bytes, head: h11.Response) -> BodyDecoder:
    """RFC 9112 section 6.3, for the responses h11 accepted (it rejects conflicting lengths and
    transfer codings other than chunked)."""
    if method == b"HEAD" or head.status_code in (204, 304) or head.status_code < 200:
        return LengthDecoder(0)
    length: bytes | None = None
    for name, value in head.headers:
        if name == b"transfer-encoding":
            return ChunkedDecoder()
        if name == b"content-length":
            length = value
    if length is not None:
        return LengthDecoder(int(length))
    return UntilCloseDecoder()


def _says_close(headers: Headers) -> bool:
    return any(name == b"connection" and b"close" in value.lower() for name, value in headers)
