"""A 200 response that is not an event stream, and bodies a server compressed. Pure: headers
and bytes in, a decompressor, events or an attempt error out.

Servers answer a streamed request with other things than ``text/event-stream``: a JSON error
body with status 200 (gateways, some proxies), a whole non-streamed JSON reply (a server that
ignored ``"stream": true``), an HTML page (a login portal, a wrong base URL). Each is read as
what it is: the reply (its events, as if streamed), the server's error (with its message: fatal
unless its type says otherwise), or a fatal ``protocol`` error quoting the start of the page;
never a cut stream retried in vain. Requests ask for ``Accept-Encoding: identity``; a server
that compresses anyway is decoded when it used ``gzip`` or ``deflate`` and refused otherwise.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from orchestrator.backends.http.status import Redact, clip, message_of
from orchestrator.backends.status import is_context_length, kind_for
from orchestrator.errors import BackendError, ErrorKind, FatalError, error_for
from orchestrator.events import StreamEvent

Headers = Sequence[tuple[bytes, bytes]]
Decompress = Callable[[bytes], bytes]


class WholeReplyDecoder(Protocol):
    def reply(self, body: Mapping[str, Any]) -> list[StreamEvent]: ...


def header(headers: Headers, name: bytes) -> str:
    """A header's value (the first one), lower-cased and stripped; ``""`` when absent."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip().lower()
    return ""


def is_event_stream(headers: Headers) -> bool:
    """Whether the body is an event stream: ``text/event-stream``, or no content type at all (a
    bare server that streams without saying so)."""
    kind = header(headers, b"content-type").partition(";")[0].strip()
    return kind in ("", "text/event-stream")


def decompressor(headers: Headers) -> Decompress | None:
    """A function that decodes the body's pieces in order, None for an uncompressed body.
    Raises :class:`FatalError` (``protocol``) for an encoding other than gzip or deflate."""
    encoding = header(headers, b"content-encoding")
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        # wbits 47: a zlib or gzip header, detected from the first bytes (deflate is zlib-wrapped).
        return zlib.decompressobj(47).decompress
    raise FatalError(
        f"the server compressed its reply with {encoding!r}, which this client does not decode "
        "(it asked for none: Accept-Encoding: identity)",
        kind=ErrorKind.PROTOCOL,
    )


def read_plain_body(
    headers: Headers, body: bytes, decoder: WholeReplyDecoder, redact: Redact
) -> list[StreamEvent]:
    """The events of a whole JSON reply in ``body``; raises the attempt's error for an error
    body or a body that is no reply at all (``protocol``, fatal: asking again gets the same)."""
    content_type = header(headers, b"content-type") or "no content type"
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        text = " ".join(body[:2000].decode("utf-8", "replace").split())
        raise FatalError(
            clip(redact(f"expected an event stream, got {content_type}: {text[:300]!r}")),
            kind=ErrorKind.PROTOCOL,
        )
    if data.get("error") is not None or data.get("object") == "error" or data.get("type") == "error":
        raise error_in_body(data, redact)
    return decoder.reply(data)


def error_in_body(data: Mapping[str, Any], redact: Redact) -> BackendError:
    """The attempt error for an error body sent with status 200: fatal with the server's message
    unless its type or code names a kind that is retried (overload, rate limit, server error)."""
    message, error_type = message_of(data)
    error = data.get("error")
    code = error.get("code") if isinstance(error, Mapping) else data.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) else None
    text = clip(redact(f"error with status 200: {error_type or 'error'}: {message}"))
    if is_context_length(message, error_type):
        return FatalError(text, kind=ErrorKind.CONTEXT_LENGTH)
    return error_for(kind_for(status, error_type) or ErrorKind.BAD_REQUEST, text)
