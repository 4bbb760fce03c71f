"""Proxies: which one an origin uses (``HTTPS_PROXY``/``NO_PROXY``) and the ``CONNECT`` tunnel.

Selection follows curl's conventions: ``https_proxy``, ``http_proxy``, ``all_proxy`` and
``no_proxy``, the lower-case name winning over the upper-case one. ``no_proxy`` is a comma
list of ``*``, host names (matching themselves and their subdomains; a leading dot is
optional), an optional ``:port``, IP addresses and CIDR blocks (``10.0.0.0/8``), which the
standard library's matcher does not handle.

Every origin goes through a ``CONNECT`` tunnel, plain-HTTP ones included (LLM APIs are HTTPS;
some proxies refuse ``CONNECT`` to ports other than 443).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import attrs
import h11
import trio

from orchestrator.http.errors import ProxyError
from orchestrator.http.tls import TLSStream

READ_SIZE = 65536


@attrs.frozen
class Origin:
    """Scheme, host and port of a URL: what a connection is for."""

    scheme: str
    host: str
    port: int

    @classmethod
    def split(cls, url: str) -> tuple[Origin, bytes]:
        """A URL's origin and its request target (path and query)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port), target.encode("ascii")

    @property
    def host_header(self) -> bytes:
        """The ``Host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")

    @property
    def authority(self) -> bytes:
        """``host:port``, always with the port (the ``CONNECT`` target)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}".encode("idna")


@attrs.frozen
class ProxyConfig:
    """Which proxy each origin goes through. The default: none (no environment is read)."""

    https: str | None = None
    http: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProxyConfig:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(name) or env.get(name.upper()) or None

        any_proxy = get("all_proxy")
        return cls(
            https=get("https_proxy") or any_proxy,
            http=get("http_proxy") or any_proxy,
            no_proxy=tuple(e.strip().lower() for e in (get("no_proxy") or "").split(",") if e.strip()),
        )

    def select(self, origin: Origin) -> str | None:
        """The proxy URL for ``origin``, or None to connect directly."""
        proxy = self.https if origin.scheme == "https" else self.http
        if not proxy or self.bypasses(origin):
            return None
        return proxy

    def bypasses(self, origin: Origin) -> bool:
        """Whether ``no_proxy`` sends ``origin`` around the proxy."""
        host = origin.host.lower().strip("[]")
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        for entry in self.no_proxy:
            if entry == "*":
                return True
            name, port = entry, None
            if entry.count(":") == 1 or (entry.startswith("[") and "]:" in entry):
                name, _, port_text = entry.rpartition(":")
                # isdigit() alone also accepts '²' and other digits int() refuses.
                port = int(port_text) if port_text.isascii() and port_text.isdigit() else None
            name = name.strip("[]").lstrip(".")
            if port is not None and port != origin.port:
                continue
            if ip is not None:
                try:
                    if ip in ipaddress.ip_network(name, strict=False):
                        return True
                except ValueError:
                    pass
            elif host == name or host.endswith("." + name):
                return True
        return False


def redact_proxy(url: str) -> str:
    """A proxy URL fit for an error message: user name and password removed."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


async def open_tunnel(
    proxy_url: str, origin: Origin, ssl_context: ssl.SSLContext
) -> tuple[trio.SocketStream, trio.abc.Stream]:
    """Connect to the proxy (over TLS for an ``https://`` proxy) and ``CONNECT`` to ``origin``.

    Returns the TCP stream and the stream to speak through (the same one, or the TLS stream to
    the proxy). Raises :class:`ProxyError` on a refusal, ``OSError``/``trio.BrokenResourceError``
    when the proxy is unreachable. On any failure or cancellation it closes what it opened.
    """
    parts = urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProxyError(f"unsupported proxy URL {redact_proxy(proxy_url)!r}")
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    stream: trio.abc.Stream = tcp
    try:
        if parts.scheme == "https":  # TLS to the proxy, then TLS to the origin inside it
            tls = TLSStream(tcp, ssl_context, parts.hostname)
            stream = tls
            await tls.do_handshake()
        headers = [(b"host", origin.authority)]
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers.append((b"proxy-authorization", b"Basic " + base64.b64encode(credentials)))
        conn = h11.Connection(h11.CLIENT)
        await stream.send_all(
            conn.send(h11.Request(method=b"CONNECT", target=origin.authority, headers=headers))
        )
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(READ_SIZE)
                conn.receive_data(data)  # type: ignore[arg-type]  # h11 takes any bytes-like; its hint says bytes
            elif isinstance(event, h11.Response):
                break
            elif not isinstance(event, h11.InformationalResponse):
                raise ProxyError(f"proxy {redact_proxy(proxy_url)}: unexpected answer to CONNECT")
        if not 200 <= event.status_code < 300:
            reason = event.reason.decode("latin-1", "replace")
            raise ProxyError(f"proxy {redact_proxy(proxy_url)} refused CONNECT: {event.status_code} {reason}")
        # After a 2xx, h11 is in SWITCHED_PROTOCOL; the next bytes belong to the origin's TLS.
        if conn.trailing_data[0]:
            raise ProxyError(f"proxy {redact_proxy(proxy_url)} sent bytes before the tunnel opened")
        return tcp, stream
    except h11.ProtocolError as exc:
        await _close(stream)
        raise ProxyError(f"proxy {redact_proxy(proxy_url)}: bad answer to CONNECT ({exc})") from None
    except BaseException:
        await _close(stream)
        raise


async def _close(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True):  # close even inside a cancelled scope; never blocks
        await trio.aclose_forcefully(stream)
