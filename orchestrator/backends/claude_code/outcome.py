"""How a Claude Code CLI attempt ends: the ``result`` line or the exit status → success or an error.

Pure functions of what the CLI printed and how it exited; no I/O, no clock.
:class:`~.decode.ClaudeDecoder` calls them and hands the process shell an :class:`Outcome`.

Success is decided from ``is_error``, never from ``subtype``: the CLI reports a failed API call
as ``subtype: "success"`` with ``is_error: true``. A failed API call is retryable when another
attempt may well succeed (429, 529/overloaded, 5xx, dropped connections, timeouts) and fatal when
it would fail the same way (authentication, bad request, output token maximum). A CLI that ends
without a ``result`` line (crashed, killed) is retryable, unless it refused its command line.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from typing import Any

import attrs

from orchestrator.backends.fields import int_or_none, list_or_empty, str_or_none
from orchestrator.backends.status import is_context_length, kind_for
from orchestrator.errors import BackendError, ErrorKind, FatalError, RetryableError
from orchestrator.events import StreamEvent, Tokens


@attrs.frozen
class Outcome:
    """How an attempt ended, once the process has exited.

    ``events`` are the last events to emit (a pending message, :class:`StreamFinished` on
    success). ``error`` is None on success, else the error that ends the attempt.
    """

    events: tuple[StreamEvent, ...]
    error: BackendError | None

    @property
    def ok(self) -> bool:
        return self.error is None


# --- the result line ---------------------------------------------------------------------------------


def tokens_from_usage(usage: Mapping[str, Any]) -> Tokens:
    """Tokens from an API ``usage`` object (missing or odd counts are 0)."""
    return Tokens(
        input=int_or_none(usage.get("input_tokens")) or 0,
        output=int_or_none(usage.get("output_tokens")) or 0,
        cache_read=int_or_none(usage.get("cache_read_input_tokens")) or 0,
        cache_creation=int_or_none(usage.get("cache_creation_input_tokens")) or 0,
    )


def tokens_from_model_usage(model_usage: Any) -> Tokens:
    """Tokens from a ``result`` line's ``modelUsage`` (per model, camelCase counts), summed."""
    total = Tokens()
    for counts in model_usage.values() if isinstance(model_usage, dict) else ():
        if isinstance(counts, dict):
            total = total + Tokens(
                input=int_or_none(counts.get("inputTokens")) or 0,
                output=int_or_none(counts.get("outputTokens")) or 0,
                cache_read=int_or_none(counts.get("cacheReadInputTokens")) or 0,
                cache_creation=int_or_none(counts.get("cacheCreationInputTokens")) or 0,
            )
    return total


def result_tokens(result: Mapping[str, Any]) -> Tokens | None:
    """The attempt's tokens by its ``result`` line; None when it gives no counts at all.

    ``usage`` is all zeros after the CLI's non-streaming fallback, a budget stop or SIGINT,
    though the requests were answered: ``modelUsage`` (per model) still has the counts then.
    """
    usage = result.get("usage")
    tokens = tokens_from_usage(usage) if isinstance(usage, dict) else None
    if tokens is None or tokens.total == 0:
        by_model = tokens_from_model_usage(result.get("modelUsage"))
        if by_model.total > 0:
            return by_model
    return tokens


def classify_result(
    result: Mapping[str, Any],
    *,
    api_error: Mapping[str, Any] | None = None,
    retry_limits: bool = False,
) -> BackendError | None:
    """The error a ``result`` line ends the attempt with, or None when it succeeded.

    ``api_error`` is what the synthetic error message before it said. The error never carries a
    ``retry_after``: the delay in the CLI's ``api_retry`` notices is its own backoff (retry-after
    folded in, but not told apart), and a ``retry_after`` would pause the whole backend, not only
    this job. ``retry_limits``: hitting ``--max-turns``
    or ``--max-budget-usd`` is a :class:`RetryableError` instead of a :class:`FatalError`.
    """
    is_error = result.get("is_error")
    subtype = str_or_none(result.get("subtype")) or ""
    terminal = str_or_none(result.get("terminal_reason"))
    if is_error is False or (
        not isinstance(is_error, bool) and subtype == "success" and terminal != "api_error"
    ):
        return None
    message = _result_message(result, api_error)
    if subtype == "error_max_turns" or terminal == "max_turns":
        return _limit_error(f"max turns reached: {message}", ErrorKind.MAX_TURNS, retry_limits)
    if subtype == "error_max_budget_usd" or terminal == "budget_exhausted":
        return _limit_error(f"max budget reached: {message}", ErrorKind.MAX_BUDGET, retry_limits)
    if subtype == "error_max_structured_output_retries":  # --json-schema: the CLI's own re-asks ran out
        return RetryableError(f"{subtype}: {message}", kind=ErrorKind.INVALID_OUTPUT)
    if subtype.startswith("error_") and terminal != "api_error":
        return RetryableError(f"{subtype}: {message}", kind=ErrorKind.CLI_ERROR)
    status = int_or_none(result.get("api_error_status"))
    if status is None and api_error is not None:
        status = int_or_none(api_error.get("status"))
    error_type = str_or_none(result.get("api_error_type")) or (
        str_or_none(api_error.get("error_type")) if api_error else None
    )
    code = str_or_none(result.get("api_error")) or (
        str_or_none(api_error.get("error")) if api_error else None
    )
    kind = classify_api_error(status, error_type, code, message)
    if not kind.retryable:
        return FatalError(message, kind=kind)
    return RetryableError(message, kind=kind)


def _result_message(result: Mapping[str, Any], api_error: Mapping[str, Any] | None) -> str:
    text = str_or_none(result.get("result"))
    if text:
        return text
    errors = [e for e in list_or_empty(result.get("errors")) if isinstance(e, str)]
    if errors:
        return "; ".join(errors)
    if api_error is not None and str_or_none(api_error.get("message")):
        return str(api_error["message"])
    return str_or_none(result.get("subtype")) or "error"


def _limit_error(message: str, kind: ErrorKind, retry: bool) -> BackendError:
    return RetryableError(message, kind=kind) if retry else FatalError(message, kind=kind)


# --- a failed API call ---------------------------------------------------------------------------------

_STATUS_IN_TEXT = re.compile(r"\b([45]\d\d)\b")
# The CLI's own codes for a failed call, where it gives no status or API error type.
_BY_CLI_CODE = {
    "rate_limit": ErrorKind.RATE_LIMITED,
    "overloaded": ErrorKind.OVERLOADED,
    "server_error": ErrorKind.SERVER_ERROR,
    "authentication_failed": ErrorKind.AUTH,
    "invalid_request": ErrorKind.BAD_REQUEST,
    "max_output_tokens": ErrorKind.MAX_OUTPUT_TOKENS,
    "connection_failed": ErrorKind.CONNECTION,
    "timeout": ErrorKind.TIMEOUT,
}


def classify_api_error(status: int | None, error_type: str | None, code: str | None, text: str) -> ErrorKind:
    """The kind of a failed API call; the kind says whether it is retried.

    A too-long prompt is ``context_length`` whatever else is said. Then the HTTP status and API
    error type decide, through the table every backend shares
    (:func:`~orchestrator.backends.status.kind_for`); then the CLI's own error code
    (``rate_limit``, ``overloaded``, ``authentication_failed``, ``connection_failed``,
    ``max_output_tokens``, ...); then the message text, since the status is null for dropped
    connections and timeouts.
    """
    lowered = text.lower()
    if is_context_length(text, error_type):
        return ErrorKind.CONTEXT_LENGTH
    if status is None:
        found = _STATUS_IN_TEXT.search(text)
        if found and ("error" in lowered or "(" + found.group(1) + ")" in text):
            status = int(found.group(1))
    placed = kind_for(status, error_type)
    if placed is not None:
        return placed
    if code in _BY_CLI_CODE:
        return _BY_CLI_CODE[code]
    if "output token maximum" in lowered:
        return ErrorKind.MAX_OUTPUT_TOKENS
    if "invalid api key" in lowered or "authentication" in lowered or "unauthorized" in lowered:
        return ErrorKind.AUTH
    if "rate limit" in lowered:
        return ErrorKind.RATE_LIMITED
    if "overloaded" in lowered:
        return ErrorKind.OVERLOADED
    if "timed out" in lowered or "timeout" in lowered:
        return ErrorKind.TIMEOUT
    if "connection" in lowered or "econn" in lowered or "socket" in lowered or "network" in lowered:
        return ErrorKind.CONNECTION
    # An API failure we cannot place: the runner's attempt limit bounds the cost of guessing wrong.
    return ErrorKind.API_ERROR


# --- no result line ------------------------------------------------------------------------------------

# Startup failures that another attempt would repeat exactly (bad flags, refused options).
_USAGE_ERRORS = (
    "unknown option",
    "requires --verbose",
    "cannot be used with root",
    "invalid value",
    "error: option",
)


def classify_exit(returncode: int | None, stderr_tail: str) -> BackendError:
    """The error for a CLI that ended without a ``result`` line (crashed, killed, refused to start).

    ``returncode`` is the exit status (negative: killed by that signal; None: unknown);
    ``stderr_tail`` the last lines of stderr, quoted in the message.
    """
    if returncode is None:
        how = "stopped"
    elif returncode < 0:
        how = f"was killed by {_signal_name(-returncode)}"
    elif returncode > 128 and returncode - 128 < signal.NSIG:
        how = f"exited with code {returncode} ({_signal_name(returncode - 128)})"
    else:
        how = f"exited with code {returncode}"
    tail = stderr_tail.strip()
    message = f"claude {how} without a result line" + (f"; stderr: {tail}" if tail else "; stderr was empty")
    if any(marker in tail.lower() for marker in _USAGE_ERRORS):
        return FatalError(message, kind=ErrorKind.CLI_USAGE)
    return RetryableError(message, kind=ErrorKind.PROCESS)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
