"""The one vocabulary of failures, the errors a backend raises to end an attempt, and the error
for bad input.

Every failed attempt and failed job is named by an :class:`ErrorKind`: a closed set, each member
with its meaning and whether our backends retry it by default. The log stores a kind as its name
(``"rate_limited"``), so a :class:`~enum.StrEnum` compares and prints as that string.

A backend ends a failed attempt by raising :class:`RetryableError` (the job may try again,
not sooner than ``retry_after`` seconds) or :class:`FatalError` (trying again cannot help).
Anything else escaping a backend is a bug in that backend; the runner records it as a fatal
``internal`` failure of that job and the batch goes on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class ErrorKind(enum.StrEnum):
    """Why an attempt failed. Each member is ``name, retried by default, meaning`` in one table.

    ``retryable`` is what our backends decide for that kind; a backend may still decide
    otherwise for one failure (claude-code's ``retry_limits`` retries ``max_turns``), and the
    exception's class, not the kind, is what the runner obeys.
    """

    retryable: bool
    meaning: str

    def __new__(cls, name: str, retryable: bool, meaning: str) -> ErrorKind:
        member = str.__new__(cls, name)
        member._value_ = name
        member.retryable = retryable
        member.meaning = meaning
        return member

    # The provider refused or failed the request (from its HTTP status or error type).
    RATE_LIMITED = "rate_limited", True, "the provider's rate limit refused the request (HTTP 429)"
    OVERLOADED = "overloaded", True, "the provider is overloaded (HTTP 529, an overload error)"
    SERVER_ERROR = "server_error", True, "the provider failed (HTTP 5xx, an unexplained error mid-stream)"
    TIMEOUT = "timeout", True, "the provider timed the request out (HTTP 408, an API timeout)"
    CONFLICT = "conflict", True, "the provider asks for the request again (HTTP 409)"
    API_ERROR = "api_error", True, "the API reported a failure that no other kind describes"
    BAD_REQUEST = "bad_request", False, "the provider refused the request (HTTP 400, 501, other 4xx)"
    AUTH = "auth", False, "the key or login was refused (HTTP 401)"
    PERMISSION = "permission", False, "the key may not use this model or resource (HTTP 403)"
    NOT_FOUND = "not_found", False, "no such model or endpoint (HTTP 404)"
    TOO_LARGE = "too_large", False, "the request is larger than the provider accepts (HTTP 413)"
    UNPROCESSABLE = "unprocessable", False, "the provider cannot process the request (HTTP 422)"
    CONTEXT_LENGTH = "context_length", False, "the prompt does not fit the model's context window"
    QUOTA = "quota", False, "the account's quota is used up"
    BILLING = "billing", False, "the account has a billing problem"
    MAX_OUTPUT_TOKENS = "max_output_tokens", False, "the reply went over the output token maximum"
    EXPIRED = "expired", True, "a batch-API request expired before the provider ran it"
    SPEND_CAP = "spend_cap", False, "not sent: its remote batch would have passed the spend cap"
    # The connection and the stream.
    CONNECT = "connect", True, "no connection could be opened to the provider"
    CONNECTION = "connection", True, "the connection dropped or the stream ended before the reply did"
    TLS = "tls", False, "the provider's TLS certificate is not trusted"
    TIMEOUT_FIRST_EVENT = "timeout_first_event", True, "no event within first_event_timeout of the request"
    PROTOCOL = (
        "protocol",
        True,
        "the stream was malformed or ended without stream_finished (fatal when asking again gets the "
        "same: an event over `max_event_bytes`, an HTML page, an encoding the client cannot read)",
    )
    # The agent CLI and other processes a backend runs.
    MAX_TURNS = "max_turns", False, "the agent reached its max_turns"
    MAX_BUDGET = "max_budget", False, "the agent reached its max_budget_usd"
    CLI_ERROR = "cli_error", True, "the claude CLI ended the run with an error of its own"
    CLI_MISSING = "cli_missing", False, "the claude CLI cannot be found or started"
    CLI_USAGE = "cli_usage", False, "the claude CLI refused its command line"
    CWD = "cwd", False, "the job's working directory does not exist"
    PROCESS = "process", True, "the backend's process crashed or was killed before it gave a result"
    INVALID_OUTPUT = "invalid_output", True, "the reply's structured output failed validation"
    RESOURCES = "resources", True, "the machine ran out of a resource (file descriptors, memory)"
    WORKER_LOST = "worker_lost", True, "the worker running the attempt was lost"
    # Decided by the runner.
    TIMEOUT_IDLE = "timeout_idle", True, "the stream was silent for longer than timeouts.idle"
    TIMEOUT_ATTEMPT = "timeout_attempt", True, "the attempt took longer than timeouts.attempt"
    TIMEOUT_JOB = "timeout_job", False, "the job's attempts and waits took longer than timeouts.job"
    INTERNAL = "internal", False, "a bug in a backend or the orchestrator: that job fails, the batch goes on"
    UNKNOWN = "unknown", False, "a kind this version does not know: a backend's own name or a newer log's"

    @classmethod
    def parse(cls, name: str) -> ErrorKind:
        """The kind a name stands for: a member, the member a retired name became, or else
        :attr:`UNKNOWN`. Never raises, so a log from another version stays readable."""
        if name in _BY_NAME:
            return _BY_NAME[name]
        if name in RETIRED:
            return RETIRED[name]
        if name.startswith("http_4"):
            return cls.BAD_REQUEST  # an old HTTP backend's name for a 4xx without a kind of its own
        return cls.UNKNOWN


_BY_NAME: Mapping[str, ErrorKind] = {kind.value: kind for kind in ErrorKind}
BACKEND_WIDE: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.AUTH,
        ErrorKind.PERMISSION,
        ErrorKind.NOT_FOUND,
        ErrorKind.QUOTA,
        ErrorKind.BILLING,
        ErrorKind.CLI_MISSING,
    }
)
"""Kinds that say the backend (its key, account, model or program) is at fault, not the job:
every other job on that backend would fail the same way (see :mod:`orchestrator.run.halt`)."""
RETIRED: Mapping[str, ErrorKind] = {
    "context_overflow": ErrorKind.CONTEXT_LENGTH,  # local
    "request_too_large": ErrorKind.TOO_LARGE,  # claude-code
    "transient": ErrorKind.TIMEOUT,  # claude-code's 408 (and 409, 425); RetryableError's old default
    "incomplete": ErrorKind.CONNECTION,  # local: the stream ended without a finish reason
    "closed": ErrorKind.INTERNAL,  # local: a job ran after its model was closed
    "error": ErrorKind.UNKNOWN,  # BackendError's old default
}
"""Names older versions wrote, and the kind each is now. A log keeps its old names on disk;
reading it maps them here."""


def _as_kind(kind: ErrorKind | str, message: str) -> tuple[ErrorKind, str]:
    if isinstance(kind, ErrorKind):
        return kind, message
    parsed = ErrorKind.parse(kind)
    # A backend's own name is not lost: it leads the message of an ``unknown`` error.
    return parsed, (f"{kind}: {message}" if parsed is ErrorKind.UNKNOWN and kind != "error" else message)


class BackendError(Exception):
    """An attempt failed, for the reason ``kind`` names.

    ``kind`` should be an :class:`ErrorKind`. A plain string (from a backend written before the
    enum) is read with :meth:`ErrorKind.parse`; one this version does not know becomes
    ``unknown`` and is kept at the front of the message.
    """

    retryable: bool = False

    def __init__(self, message: str, *, kind: ErrorKind = ErrorKind.UNKNOWN) -> None:
        self.kind, self.message = _as_kind(kind, message)
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, kind={self.kind.value!r})"


class RetryableError(BackendError):
    """A transient failure: rate limit, overload, 5xx, dropped stream, timeout."""

    retryable = True

    def __init__(
        self, message: str, *, kind: ErrorKind = ErrorKind.UNKNOWN, retry_after: float | None = None
    ) -> None:
        super().__init__(message, kind=kind)
        self.retry_after = retry_after


class FatalError(BackendError):
    """A failure that another attempt would repeat: bad request, authentication, max turns."""


def error_for(kind: ErrorKind, message: str, *, retry_after: float | None = None) -> BackendError:
    """The error a backend raises for ``kind`` when it follows the kind's default: a
    :class:`RetryableError` (with ``retry_after``) if the kind is retried, else a :class:`FatalError`."""
    if kind.retryable:
        return RetryableError(message, kind=kind, retry_after=retry_after)
    return FatalError(message, kind=kind)


def leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    """The exceptions inside an exception group and the groups nested in it, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class ConfigError(Exception):
    """Bad input: each problem is one line, ``FILE: key.path: what is wrong``.

    The CLI prints the lines and exits 2; nothing has run yet when this is raised.
    """

    def __init__(self, problems: list[str]) -> None:
        # A bad default shared by many jobs is one problem, not one per job. A problem quotes
        # the input (keys, values), which may hold any character: each stays one line.
        self.problems = list(dict.fromkeys(_one_line(p) for p in problems))
        super().__init__("\n".join(self.problems))


def _one_line(text: str) -> str:
    """``text`` with control characters (newlines, escape sequences, NUL) written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
