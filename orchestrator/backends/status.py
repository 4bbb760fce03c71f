"""The one table from a provider's words for a failure to an :class:`ErrorKind`, for every
backend: an HTTP status, and the error type or code an API puts in its error body (Anthropic's
``overloaded_error``, OpenAI's ``insufficient_quota``, llama.cpp's ``exceed_context_size_error``).

Pure. The HTTP backends read a status and a body, claude-code reads the status and type the CLI
reports, local reads llama.cpp's error chunks, sim names the status it plays; all of them call
:func:`kind_for`, so a 403 is ``permission`` whichever backend met it.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.errors import ErrorKind

K = ErrorKind

STATUS_KINDS: Mapping[int, ErrorKind] = {
    400: K.BAD_REQUEST,
    401: K.AUTH,
    403: K.PERMISSION,
    404: K.NOT_FOUND,
    408: K.TIMEOUT,
    409: K.CONFLICT,
    413: K.TOO_LARGE,
    422: K.UNPROCESSABLE,
    429: K.RATE_LIMITED,
    501: K.BAD_REQUEST,  # "not implemented": asking again cannot help
    529: K.OVERLOADED,
}
"""Statuses with a kind of their own; any other is ``bad_request`` below 500, ``server_error`` from 500."""

# Types and codes that name the failure more exactly than any status: OpenAI sends a 429 for an
# exhausted quota, Anthropic a 500 or 503 for overload, llama.cpp a 400 for a too-long prompt.
_DECISIVE_TYPES: Mapping[str, ErrorKind] = {
    "insufficient_quota": K.QUOTA,
    "billing_error": K.BILLING,
    "context_length_exceeded": K.CONTEXT_LENGTH,
    "exceed_context_size_error": K.CONTEXT_LENGTH,
    "overloaded_error": K.OVERLOADED,
    "unavailable_error": K.OVERLOADED,  # llama.cpp: no free slot, or the model is loading
}
# Types and codes that name the failure when there is no status to go by (an error inside a
# stream, a CLI that reports only the type).
_TYPES: Mapping[str, ErrorKind] = {
    **_DECISIVE_TYPES,
    "invalid_request_error": K.BAD_REQUEST,
    "not_supported_error": K.BAD_REQUEST,
    "authentication_error": K.AUTH,
    "invalid_api_key": K.AUTH,
    "permission_error": K.PERMISSION,
    "not_found_error": K.NOT_FOUND,
    "request_too_large": K.TOO_LARGE,
    "rate_limit_error": K.RATE_LIMITED,
    "rate_limit_exceeded": K.RATE_LIMITED,
    "overloaded": K.OVERLOADED,
    "api_error": K.SERVER_ERROR,
    "server_error": K.SERVER_ERROR,
    "internal_error": K.SERVER_ERROR,
    "service_unavailable": K.SERVER_ERROR,
    "timeout_error": K.TIMEOUT,
    "timeout": K.TIMEOUT,
}
_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "prompt is too long",
    "maximum context",
    "too many tokens",
    "context size",  # llama.cpp: "the request exceeds the available context size"
)


def kind_for_status(status: int) -> ErrorKind:
    """The kind of a failed HTTP response, from its status alone."""
    return STATUS_KINDS.get(status) or (K.SERVER_ERROR if status >= 500 else K.BAD_REQUEST)


def kind_for(status: int | None, error_type: str | None = None) -> ErrorKind | None:
    """The kind of an API failure from its status (None when there is none, as inside a stream)
    and the error type or code its body names (None when it names none).

    A type in the decisive list wins; then an error status; then any type we know. None when
    neither places the failure, so the caller can try what else it knows (a message's text).
    """
    decisive = _DECISIVE_TYPES.get(error_type) if error_type is not None else None
    if decisive is not None:
        return decisive
    if status is not None and status >= 400:
        return kind_for_status(status)
    return _TYPES.get(error_type) if error_type is not None else None


def is_context_length(message: str, error_type: str | None = None) -> bool:
    """Whether a provider's error says the prompt does not fit the context window, whatever
    its status (providers send 400, 413 or even 500 for it)."""
    lowered = f"{error_type or ''} {message}".lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)
