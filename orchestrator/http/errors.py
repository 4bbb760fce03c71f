"""What the HTTP transport raises. An HTTP error status is not an exception here: the caller
reads the status and decides (the backends map statuses to retryable or fatal errors)."""

from __future__ import annotations


class TransportError(Exception):
    """Base class of every transport failure. Messages never contain request headers."""


class ConnectError(TransportError):
    """TCP connect, proxy tunnel or TLS handshake failed: nothing was sent.

    ``certificate`` is True when the server's certificate failed verification (retrying cannot
    help; a CA file or the system trust store must change). ``out_of_files`` is True when the
    process had no file descriptor left for the socket (EMFILE/ENFILE).
    """

    def __init__(self, message: str, *, certificate: bool = False, out_of_files: bool = False) -> None:
        super().__init__(message)
        self.certificate = certificate
        self.out_of_files = out_of_files


class ProxyError(ConnectError):
    """The proxy refused the ``CONNECT`` or answered something else."""


class RemoteProtocolError(TransportError):
    """The server broke HTTP framing, reset the connection or closed it mid-response."""
