"""A small streaming HTTP/1.1 client for trio: keep-alive pool, TLS, proxies, SSE.

Pure parts (tested without I/O): :mod:`.sse` (server-sent events), :mod:`.framing` (where a
response body ends). I/O parts: :mod:`.connection` (one request/response on one connection,
h11 for the head), :mod:`.pool` (keep-alive stacks per origin), :mod:`.proxy` (``CONNECT``
tunnels, ``HTTPS_PROXY``/``NO_PROXY``), :mod:`.tls` (verification context).
"""

from __future__ import annotations

from orchestrator.http.connection import Response
from orchestrator.http.errors import ConnectError, ProxyError, RemoteProtocolError, TransportError
from orchestrator.http.pool import ConnectionPool, PoolStats, open_pool
from orchestrator.http.proxy import Origin, ProxyConfig
from orchestrator.http.sse import ServerSentEvent, SSEDecoder, SSEError
from orchestrator.http.tls import client_ssl_context

__all__ = [
    "ConnectError",
    "ConnectionPool",
    "Origin",
    "PoolStats",
    "ProxyConfig",
    "ProxyError",
    "RemoteProtocolError",
    "Response",
    "SSEDecoder",
    "SSEError",
    "ServerSentEvent",
    "TransportError",
    "client_ssl_context",
    "open_pool",
]
