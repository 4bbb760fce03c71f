"""How an HTTP API's failures become retryable or fatal attempt errors. Pure: the current time
is passed in, and every message goes through the caller's ``redact`` before it is cut to
:data:`MAX_MESSAGE` characters (cut first, a key across the cut would keep its start).

Retryable: 408, 409, 429, 5xx (529 is Anthropic's "overloaded"), error events mid-stream that
say overload, rate limit or a server-side failure. Fatal, with the server's own message: 400,
401, 403, 404, 413, 422 and other 4xx, and context-length errors whatever their status.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from orchestrator.errors import BackendError, FatalError, RetryableError

Redact = Callable[[str], str]
MAX_MESSAGE = 600

_KINDS = {
    400: "bad_request",
    401: "auth",
    403: "permission",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    422: "unprocessable",
    429: "rate_limited",
    529: "overloaded",
}
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "prompt is too long",
    "maximum context",
    "too many tokens",
)
# Error types and codes that no retry can fix, whatever the status says (OpenAI sends a 429
# for an exhausted quota).
_FATAL_TYPES = {
    "invalid_request_error": "bad_request",
    "authentication_error": "auth",
    "invalid_api_key": "auth",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "too_large",
    "billing_error": "billing",
    "insufficient_quota": "quota",
}
# Error types and codes that mean "try again later" when a server sends them inside a stream.
_RETRYABLE_TYPES = frozenset(
    {
        "overloaded_error",
        "api_error",
        "rate_limit_error",
        "timeout_error",
        "server_error",
        "rate_limit_exceeded",
        "internal_error",
        "service_unavailable",
        "overloaded",
        "timeout",
    }
)


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


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def is_context_length(message: str, kind: str | None) -> bool:
    lowered = f"{kind or ''} {message}".lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)


def error_for_status(
    status: int,
    reason: str,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    now: float,
    redact: Redact,
) -> BackendError:
    """The attempt error for a response with a status other than 200."""
    message, kind = server_message(body)
    text = _clip(redact(f"HTTP {status} {reason}: {message}" if message else f"HTTP {status} {reason}"))
    if is_context_length(message, kind):
        return FatalError(text, kind="context_length")
    if kind == "insufficient_quota":
        return FatalError(text, kind="quota")
    name = _KINDS.get(status) or ("server_error" if status >= 500 else f"http_{status}")
    if status in _RETRYABLE_STATUS or status >= 500:
        return RetryableError(text, kind=name, retry_after=retry_after_seconds(headers, now))
    return FatalError(text, kind=name)


def error_in_stream(message: str, kind: str | None, status: int | None, *, redact: Redact) -> BackendError:
    """The attempt error for an error the server sent inside the stream (after a 200)."""
    label = kind or (f"HTTP {status}" if status else "error")
    text = _clip(redact(f"error in stream: {label}: {message}"))
    if is_context_length(message, kind):
        return FatalError(text, kind="context_length")
    if kind in _FATAL_TYPES:
        return FatalError(text, kind=_FATAL_TYPES[kind])
    if kind == "overloaded_error" or status == 529:
        return RetryableError(text, kind="overloaded")
    if kind in ("rate_limit_error", "rate_limit_exceeded") or status == 429:
        return RetryableError(text, kind="rate_limited")
    if kind in _RETRYABLE_TYPES or status is None or status >= 500 or status in _RETRYABLE_STATUS:
        # An unexplained error after the stream began is most likely the server's trouble.
        return RetryableError(text, kind="server_error")
    return FatalError(text, kind=_KINDS.get(status, "bad_request"))
