"""Keep-alive connections per origin, and the request API on top of them.

Usage::

    async with open_pool(client_ssl_context()) as pool:
        async with pool.open_stream("POST", url, headers=[...], body=b"...") as response:
            while data := await response.receive_some():
                ...

Connection lifecycle (the invariant every test checks): a connection goes back to its origin's
idle stack only when its response was read to the end, the server did not ask to close, and
nothing followed the body. Any other exit from ``open_stream`` (an exception, a ``break``, a
cancellation, the runner's idle or attempt timeout) closes it at once, without blocking and
inside a cancelled scope too, so no socket is left behind and no ``ResourceWarning`` comes.
The one exception: if the rest of the body has already arrived, it is consumed without I/O and
the connection is kept.

Idle stacks are LIFO (hot connections stay hot) and checked before reuse: an idle socket that
is readable has been closed or reset by the server and is dropped. A reused connection that
dies before the first response byte is retried once on a new connection, as browsers, urllib3
and httpx do (a server that closed an idle connection never saw the request).

No limit on connections in use: the caller bounds concurrency (the runner's per-backend
limiter), so the pool never holds more than that many. Timeouts here: ``connect_timeout``
(TCP, proxy tunnel and TLS handshake together). Time to first event, idle streams and whole
attempts are timed by the caller (see :mod:`orchestrator.run.watchdog`), which cancels the block:
a watchdog over per-stream timestamps costs almost nothing per event, a timeout scope per
read costs about half again the client's CPU.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import h11
import trio

from orchestrator.http.connection import Connection, Response, StaleConnection, describe_broken, exchange
from orchestrator.http.errors import ConnectError, ProxyError
from orchestrator.http.proxy import Origin, ProxyConfig, open_tunnel
from orchestrator.http.tls import TLSStream, client_ssl_context
from orchestrator.resources import out_of_files

USER_AGENT = b"orchestrator"
_PoolKey = tuple[Origin, str | None]


@attrs.define
class PoolStats:
    """Counters for tests and benchmarks. ``open`` is the number of connections not yet closed
    (in use or idle); it is 0 once the pool is closed."""

    connects: int = 0
    reuses: int = 0
    stale_retries: int = 0
    open: int = 0


class ConnectionPool:
    """Per-origin stacks of idle keep-alive connections. Open it with :func:`open_pool`."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        proxy: ProxyConfig | None = None,
        connect_timeout: float | None = 30.0,
        max_idle_per_origin: int = 1024,
        user_agent: bytes = USER_AGENT,
    ) -> None:
        self.ssl_context = ssl_context or client_ssl_context()
        self.proxy = proxy or ProxyConfig()
        self.connect_timeout = connect_timeout
        self.max_idle_per_origin = max_idle_per_origin
        self.user_agent = user_agent
        self.stats = PoolStats()
        self._idle: dict[_PoolKey, list[Connection]] = {}
        self._origins: dict[str, tuple[Origin, bytes]] = {}
        self._closed = False

    @asynccontextmanager
    async def open_stream(
        self, method: str, url: str, *, headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b""
    ) -> AsyncIterator[Response]:
        """Send one request and yield its :class:`Response` once the head has arrived.

        ``Host``, ``User-Agent`` and ``Content-Length`` are added. Read the body inside the block
        to keep the connection. Raises :class:`ConnectError` (nothing was sent) and
        :class:`RemoteProtocolError`. Cancellation propagates unchanged and closes the connection.
        """
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        split = self._origins.get(url)
        if split is None:
            split = self._origins[url] = Origin.split(url)
        origin, target = split
        request = h11.Request(
            method=method,
            target=target,
            headers=[
                (b"host", origin.host_header),
                (b"user-agent", self.user_agent),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        )
        connection: Connection | None = None
        response: Response | None = None
        try:
            while response is None:
                connection = await self._checkout(origin)
                try:
                    response = await exchange(connection, request, body)
                except StaleConnection:
                    await self._discard(connection)
                    connection = None
                    self.stats.stale_retries += 1
            yield response
        finally:
            if connection is not None:
                if response is not None and not response.complete:
                    response.drain_buffered()
                if response is not None and response.reusable:
                    await self._checkin(connection)
                else:
                    await self._discard(connection)

    async def aclose(self) -> None:
        """Close every idle connection; later requests are refused. Never blocks."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for stack in idle.values():
            for connection in stack:
                await self._discard(connection)

    async def _checkout(self, origin: Origin) -> Connection:
        proxy = self.proxy.select(origin)
        key = (origin, proxy)
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop()
            if connection.idle_healthy():
                connection.reused = True
                self.stats.reuses += 1
                return connection
            await self._discard(connection)
        return await self._connect(origin, proxy, key)

    async def _checkin(self, connection: Connection) -> None:
        stack = self._idle.setdefault(connection.key, [])  # type: ignore[arg-type]
        if self._closed or len(stack) >= self.max_idle_per_origin:
            await self._discard(connection)
        else:
            stack.append(connection)

    async def _discard(self, connection: Connection) -> None:
        self.stats.open -= 1
        await connection.aclose()

    async def _connect(self, origin: Origin, proxy: str | None, key: _PoolKey) -> Connection:
        where = f"{origin.host}:{origin.port}"
        stream: trio.abc.Stream | None = None
        timeout = self.connect_timeout if self.connect_timeout is not None else math.inf
        try:
            with trio.fail_after(timeout):
                if proxy is None:
                    tcp = await trio.open_tcp_stream(origin.host, origin.port)
                    stream = tcp
                else:
                    tcp, stream = await open_tunnel(proxy, origin, self.ssl_context)
                if origin.scheme == "https":
                    stream = TLSStream(stream, self.ssl_context, origin.host)
                    await stream.do_handshake()
        except BaseException as exc:
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
            if isinstance(exc, trio.TooSlowError):
                raise ConnectError(f"{where}: no connection within {timeout:g}s") from None
            if isinstance(exc, ProxyError):
                raise
            if isinstance(exc, trio.BrokenResourceError):
                cause = exc.__cause__
                certificate = isinstance(cause, ssl.SSLCertVerificationError)
                raise ConnectError(f"{where}: {describe_broken(exc)}", certificate=certificate) from None
            if isinstance(exc, OSError):
                # trio reports a failed socket() as "all attempts failed", the errno in its cause.
                full = out_of_files(exc)
                raise ConnectError(f"{where}: {exc.strerror or exc}", out_of_files=full) from None
            raise
        self.stats.connects += 1
        self.stats.open += 1
        return Connection(stream, tcp.socket, key)


@asynccontextmanager
async def open_pool(
    ssl_context: ssl.SSLContext | None = None,
    *,
    proxy: ProxyConfig | None = None,
    connect_timeout: float | None = 30.0,
    max_idle_per_origin: int = 1024,
) -> AsyncIterator[ConnectionPool]:
    """A :class:`ConnectionPool` for the block; leaving it closes every idle connection.

    Streams still open when the block ends belong to tasks of the block, which structured
    concurrency has already finished, so nothing outlives it.
    """
    pool = ConnectionPool(
        ssl_context, proxy=proxy, connect_timeout=connect_timeout, max_idle_per_origin=max_idle_per_origin
    )
    try:
        yield pool
    finally:
        await pool.aclose()
