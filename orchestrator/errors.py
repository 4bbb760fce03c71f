"""The errors a backend raises to end an attempt, and the error for bad input.

A backend ends a failed attempt by raising :class:`RetryableError` (the job may try again,
not sooner than ``retry_after`` seconds) or :class:`FatalError` (trying again cannot help).
Anything else escaping a backend is a bug in that backend; the runner records it as a fatal
``internal`` failure of that job and the batch goes on.
"""

from __future__ import annotations


class BackendError(Exception):
    """An attempt failed. ``kind`` is a short stable name (``rate_limited``, ``auth``, ...)."""

    retryable: bool = False

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, kind={self.kind!r})"


class RetryableError(BackendError):
    """A transient failure: rate limit, overload, 5xx, dropped stream, timeout."""

    retryable = True

    def __init__(self, message: str, *, kind: str = "transient", retry_after: float | None = None) -> None:
        super().__init__(message, kind=kind)
        self.retry_after = retry_after


class FatalError(BackendError):
    """A failure that another attempt would repeat: bad request, authentication, max turns."""


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
