"""The orchestrator's own diagnostics (structlog), apart from the event log.

The event log records what happened to the jobs; diagnostics say what the orchestrator itself
noticed: a backend that raised something it should not have (with its traceback), attempts
failing and how they were classified, limiter decisions.

A library leaves its host's logging alone: nothing here configures structlog on import or on a
``run_batch``. Only the ``orchestrate`` command calls :func:`configure` (stderr; warnings only
unless ``-v`` or ``ORCHESTRATOR_DEBUG=1``). Library code logs through :func:`logger`, which
follows the host: through the host's structlog configuration when it has one, else through the
standard library's ``logging`` under the module's name (so with no logging set up at all, only
warnings reach stderr, as with any well-behaved library).

Whichever way a line goes, every value in it, tracebacks included, has the secrets of
:func:`orchestrator.redact.known` hidden and its control characters made
:func:`~orchestrator.visible.visible` before it leaves this module: a server's message or an
exception may quote a key or an escape sequence.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

from orchestrator.redact import known
from orchestrator.visible import visible

# structlog (and the console renderer's rich, when installed) is imported on the first line
# logged, not with the library: `from orchestrator import run_batch` stays quick to import.


def configure(*, verbose: bool = False) -> None:
    """For the ``orchestrate`` command only: send diagnostics to stderr, at debug level when
    ``verbose`` (or ORCHESTRATOR_DEBUG is set), else warnings only. Replaces any structlog
    configuration of the process, so a library must never call it."""
    import structlog

    level = logging.DEBUG if verbose or os.environ.get("ORCHESTRATOR_DEBUG") else logging.WARNING
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.processors.format_exc_info,
            _shown,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


class _HostLogger:
    """Chooses at each call, so a host may configure structlog before or after importing us."""

    __slots__ = ("_name", "_stdlib")

    def __init__(self, name: str) -> None:
        self._name = name
        self._stdlib: Any = None

    def __getattr__(self, method: str) -> Any:
        import structlog

        if structlog.is_configured():
            target = structlog.get_logger(self._name)
        else:
            if self._stdlib is None:
                # Render for stdlib logging, and drop events below the stdlib logger's level
                # before any rendering work.
                self._stdlib = structlog.wrap_logger(
                    logging.getLogger(self._name),
                    processors=[
                        structlog.stdlib.filter_by_level,
                        structlog.processors.format_exc_info,
                        structlog.dev.ConsoleRenderer(colors=False),
                    ],
                    wrapper_class=structlog.stdlib.BoundLogger,
                )
            target = self._stdlib
        log = getattr(target, method)

        def shown(event: str | None = None, **values: Any) -> Any:
            # Redacted here, before the host's processors see anything: a traceback becomes text.
            exc_info = values.pop("exc_info", None)
            if exc_info:
                values["exception"] = _traceback(exc_info)
            return log(**_shown(None, method, {"event": event, **values}))

        return shown


def _traceback(exc_info: Any) -> str:
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def _shown(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """Every value as text, secrets hidden and control characters visible (tracebacks keep
    their lines)."""
    redactor = known()
    return {
        key: visible(
            redactor.text(value if isinstance(value, str) else repr(value)),
            lines=key == "exception",
        )
        for key, value in event_dict.items()
    }


def logger(name: str) -> Any:
    """A logger for library code (``debug``, ``warning``, ... with key-value context) that
    configures nothing: it logs through the host's structlog configuration when there is one,
    else through stdlib ``logging.getLogger(name)``."""
    return _HostLogger(name)
