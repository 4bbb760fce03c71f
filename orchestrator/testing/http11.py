"""HTTP/1.1 on the fakes' side, just enough: read one request off a connection, end one with a reset.

The loopback fakes (:mod:`.anthropic`, :mod:`.openai`, :mod:`.remote_batches`) answer what real
clients send: a head, then a body by ``content-length`` or ``transfer-encoding: chunked``, on a
connection that may carry further requests (keep-alive).
"""

from __future__ import annotations

import socket
import struct

import attrs
import trio

MAX_HEAD = 64 * 1024
"""A request head longer than this is not answered (the connection is closed)."""

_READ = 65536


@attrs.frozen
class Request:
    """One request as read: ``target`` as sent (path and query), header names lower-cased."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


async def read_request(stream: trio.abc.ReceiveStream, buffer: bytearray | None = None) -> Request | None:
    """The next request on ``stream``; None when the client sends no complete request (it hangs
    up, or sends a head over :data:`MAX_HEAD`). ``buffer`` holds what was read past the previous
    request of the connection and keeps what is read past this one (pass the same one for each
    request of a keep-alive connection; None for a connection of one request)."""
    if buffer is None:
        buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD or not await _receive(stream, buffer):
            return None
    end = buffer.index(b"\r\n\r\n")
    if end > MAX_HEAD:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    method, target, _version = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(stream, buffer)
    else:
        body = await _read_exactly(stream, buffer, int(headers.get("content-length") or 0))
    return None if body is None else Request(method, target, headers, body)


def reset(stream: trio.abc.Stream) -> None:
    """Make the coming close of ``stream`` a TCP reset (SO_LINGER 0): the client sees ECONNRESET,
    not a clean end. Under TLS the socket beneath is the one reset."""
    raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(raw, trio.SocketStream):
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _receive(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bool:
    """Append what arrives to ``buffer``; False at the end of the stream."""
    data = await stream.receive_some(_READ)
    buffer += data
    return bool(data)


async def _read_exactly(stream: trio.abc.ReceiveStream, buffer: bytearray, length: int) -> bytes | None:
    while len(buffer) < length:
        if not await _receive(stream, buffer):
            return None
    body = bytes(buffer[:length])
    del buffer[:length]
    return body


async def _read_chunked(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes | None:
    body = bytearray()
    while True:
        while b"\r\n" not in buffer:
            if not await _receive(stream, buffer):
                return None
        size_line = bytes(buffer[: buffer.index(b"\r\n")])
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return None  # not a chunk size: the request cannot be read
        del buffer[: len(size_line) + 2]
        chunk = await _read_exactly(stream, buffer, size + 2)  # the chunk and its CRLF
        if chunk is None:
            return None
        body += chunk[:size]
        if size == 0:
            return bytes(body)
