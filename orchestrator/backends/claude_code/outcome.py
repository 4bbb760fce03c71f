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

from orchestrator.backends.fields import int_or_none, list_or_empty, number_or_none, str_or_none
from orchestrator.backends.status import is_context_length, kind_for
from orchestrator.errors import BackendError, ErrorKind, FatalError, RetryableError
from orchestrator.events import StreamEvent, Tokens, UsageReported


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


def result_usage(result: Mapping[str, Any], *, failed: bool) -> UsageReported | None:
    """What a ``result`` line says the attempt consumed: its tokens, and when ``failed`` its cost.

    A succeeded attempt's cost travels in its :class:`StreamFinished`, which replaces the
    attempt's usage events in the totals. A failed attempt has no :class:`StreamFinished`, so it
    is charged what its usage events report: the CLI's ``total_cost_usd`` goes here, or the job's
    cost would be unknown although the CLI knew it. None when the line gives neither.
    """
    usage = result.get("usage")
    tokens = tokens_from_usage(usage) if isinstance(usage, dict) else None
    cost = number_or_none(result.get("total_cost_usd")) if failed else None
    if tokens is None and cost is None:
        return None
    return UsageReported(tokens or Tokens(), cost_usd=cost)


def classify_result(
    result: Mapping[str, Any],
    *,
    api_error: Mapping[str, Any] | None = None,
    last_retry: Mapping[str, Any] | None = None,
    retry_limits: bool = False,
) -> BackendError | None:
    """The error a ``result`` line ends the attempt with, or None when it succeeded.

    ``api_error`` is what the synthetic error message before it said; ``last_retry`` the last
    ``api_retry`` notice, whose planned delay (the CLI honours ``retry-after``) becomes our
    ``retry_after`` when it was for the same failure. ``retry_limits``: hitting ``--max-turns``
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
    retry_after = None
    if (
        last_retry is not None
        and int_or_none(last_retry.get("error_status")) == status
        and kind in (ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED)
    ):
        delay_ms = number_or_none(last_retry.get("retry_delay_ms"))
        retry_after = delay_ms / 1000 if delay_ms is not None and delay_ms >= 0 else None
    return RetryableError(message, kind=kind, retry_after=retry_after)


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
