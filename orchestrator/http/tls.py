"""The client's TLS: the verification context, and a lean TLS stream for trio.

Why our own stream rather than ``trio.SSLStream``: on a streamed reply every TLS record is a
few hundred bytes, and ``SSLStream.receive_some`` returns one record per call, through a
general machinery (conflict detection, renegotiation support, a retry loop per call). When a
busy client finds many records waiting, it still pays that per record. :class:`TLSStream`
decrypts every complete record that has arrived in one call, which is what asyncio's SSL
transport does; on the transport benchmark that took our client from 1.8x aiohttp's CPU per
event to the numbers in ``BENCHMARKS.md``. It does only what an HTTPS client needs: a client
handshake, application data both ways, TLS 1.3 post-handshake messages (session tickets, key
updates), and no renegotiation (TLS 1.2 renegotiation is refused by the server side of every
LLM API and by OpenSSL 3 defaults).
"""

from __future__ import annotations

import ssl

import trio

READ_SIZE = 65536


def client_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verify servers against the system trust store, plus the CA in ``ca_file`` if given.

    ``ssl.create_default_context`` loads OpenSSL's default paths, which honour
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``; ``ca_file`` adds a CA (a company proxy's, a test CA)
    without dropping the system roots. Hostnames are checked. ALPN offers only ``http/1.1`` so
    a server never picks HTTP/2 for a client that cannot speak it. Build one per batch and
    share it: loading the system store takes tens of milliseconds.
    """
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class TLSStream(trio.abc.Stream):
    """TLS (client side) over another trio stream.

    Not for concurrent use: one task sends or receives at a time (an HTTP/1.1 connection is
    used by one request at a time). Failures of TLS or of the transport raise
    ``trio.BrokenResourceError`` with the ``ssl.SSLError``/``OSError`` as ``__cause__``.
    End of stream: ``receive_some`` returns ``b""`` on the peer's close_notify and also on a
    plain TCP close without one (servers often skip it; HTTP framing tells where a response
    ends, so a cut response is still detected above). Cancellation: a cancelled receive loses
    nothing; a cancelled send leaves the stream unusable, and the caller closes it (the
    connection pool always does). ``aclose`` closes the transport without a TLS goodbye.
    """

    def __init__(self, transport: trio.abc.Stream, context: ssl.SSLContext, server_hostname: str) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._eof = False

    async def do_handshake(self) -> None:
        """Run the TLS handshake, verifying the server's certificate and hostname."""
        tls = self._tls
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._receive_records()
            except ssl.SSLError as exc:
                await self._flush_quietly()  # the alert tells the server why
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
        await self._flush()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS error while sending: {exc}") from exc
        await self._flush()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Every byte of every complete record received so far (waiting for one if none has
        arrived); ``max_bytes`` is ignored beyond one record, like a socket's buffer size."""
        tls = self._tls
        size = max_bytes or READ_SIZE
        while True:
            parts: list[bytes] = []
            try:
                while True:
                    data = tls.read(size)
                    if not data:  # close_notify
                        self._eof = True
                        break
                    parts.append(data)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # a goodbye, or a TCP close without one
                self._eof = True
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS error while receiving: {exc}") from exc
            if self._outgoing.pending:  # a TLS 1.3 key update asks for an answer
                await self._flush()
            if parts:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            if self._eof:
                return b""
            await self._receive_records()

    async def _receive_records(self) -> None:
        data = await self.transport.receive_some(READ_SIZE)
        if data:
            self._incoming.write(data)
        else:
            self._eof = True
            self._incoming.write_eof()

    async def _flush(self) -> None:
        if self._outgoing.pending:
            await self.transport.send_all(self._outgoing.read())

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def aclose(self) -> None:
        await self.transport.aclose()
