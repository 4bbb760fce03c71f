"""How an HTTP API's failures become retryable or fatal attempt errors. Pure: the current time
is passed in, and every message goes through the caller's ``redact`` before it is cut to
:data:`MAX_MESSAGE` characters (cut first, a key across the cut would keep its start).

The status and error type become a kind through the table every backend shares
(:mod:`orchestrator.backends.status`), and the kind says whether to retry: 408, 409, 429, 5xx
(529 is Anthropic's "overloaded") and error events mid-stream that say overload, rate limit or a
server-side failure are retried; 400, 401, 403, 404, 413, 422, 501 and other 4xx, an exhausted
quota and context-length errors whatever their status fail at once, with the server's message.
A response's ``x-should-retry: true`` or ``false`` (OpenAI, Anthropic) overrides that choice.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from orchestrator.backends.status import is_context_length, kind_for, kind_for_status
from orchestrator.errors import BackendError, ErrorKind, FatalError, RetryableError, error_for

Redact = Callable[[str], str]
MAX_MESSAGE = 600


def retry_after_seconds(headers: Sequence[tuple[bytes, bytes]], now: float) -> float | None:
    """The server's requested wait: ``retry-after-ms``, else ``retry-after`` in seconds or as an
    HTTP date (``now`` is the Unix time). None when absent or unreadable; never negative."""
    values = {name: value for name, value in headers if name in (b"retry-after-ms", b"retry-after")}
    ms = values.get(b"retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    raw = values.get(b"retry-after")
    if raw is None:
        return None
    text = raw.decode("latin-1").strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def server_message(body: bytes) -> tuple[str, str | None]:
    """The message and error type/code in an error body, whichever shape it has: Anthropic's and
    OpenAI's ``{"error": {"message", "type", "code"}}``, vLLM's ``{"message", "type"}``,
    FastAPI's ``{"detail"}``, or plain text."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return " ".join(text.split()), None
    return message_of(data)


def message_of(data: Any) -> tuple[str, str | None]:
    """``server_message`` for a body that was already parsed."""
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping):
            kind = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
            return _text(error.get("message") or error), kind if isinstance(kind, str) else None
        if isinstance(error, str):
            return _text(error), None
        for key in ("message", "detail"):
            if key in data:
                kind = data.get("type") if isinstance(data.get("type"), str) else None
                return _text(data[key]), kind
    return _text(data), None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def clip(text: str) -> str:
    """``text`` cut to :data:`MAX_MESSAGE` characters (redact first: see the module docstring)."""
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def error_for_status(
    status: int,
    reason: str,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    now: float,
    redact: Redact,
    request_id: str | None = None,
) -> BackendError:
    """The attempt error for a response with a status other than 200; the provider's
    ``request_id``, when given, ends the message."""
    message, kind = server_message(body)
    text = clip(redact(f"HTTP {status} {reason}: {message}" if message else f"HTTP {status} {reason}"))
    if request_id is not None:
        text += f" (request id {request_id})"
    if is_context_length(message, kind):
        return FatalError(text, kind=ErrorKind.CONTEXT_LENGTH)
    name = kind_for(status, kind) or kind_for_status(status)
    retry_after = retry_after_seconds(headers, now)
    # The server's own word on retrying wins over the table, as in the official SDKs.
    should_retry = dict(headers).get(b"x-should-retry", b"").strip().lower()
    if should_retry == b"true":
        return RetryableError(text, kind=name, retry_after=retry_after)
    if should_retry == b"false":
        return FatalError(text, kind=name)
    return error_for(name, text, retry_after=retry_after)


def error_in_stream(message: str, kind: str | None, status: int | None, *, redact: Redact) -> BackendError:
    """The attempt error for an error the server sent inside the stream (after a 200)."""
    label = kind or (f"HTTP {status}" if status else "error")
    text = clip(redact(f"error in stream: {label}: {message}"))
    if is_context_length(message, kind):
        return FatalError(text, kind=ErrorKind.CONTEXT_LENGTH)
    # An unexplained error after the stream began is most likely the server's trouble.
    return error_for(kind_for(status, kind) or ErrorKind.SERVER_ERROR, text)
