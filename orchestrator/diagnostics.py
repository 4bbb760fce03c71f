"""The orchestrator's own diagnostics (structlog), apart from the event log.

The event log records what happened to the jobs; diagnostics say what the orchestrator itself
noticed: a backend that raised something it should not have (with its traceback), attempts
failing and how they were classified, limiter decisions. They go to standard error, quiet by
default (warnings only); ``orchestrate -v`` or ``ORCHESTRATOR_DEBUG=1`` shows everything.

Every value in a line, tracebacks included, has the secrets of :func:`orchestrator.redact.known`
hidden and its control characters made :func:`~orchestrator.visible.visible` before it is
written: a server's message or an exception may quote a key or an escape sequence.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from orchestrator.redact import known
from orchestrator.visible import visible

_configured = False


def configure(*, verbose: bool = False) -> None:
    """Send diagnostics to stderr, at debug level when ``verbose`` (or ORCHESTRATOR_DEBUG is set)."""
    global _configured
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
    _configured = True


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
    """A bound logger; configures the quiet default on first use."""
    if not _configured:
        configure()
    return structlog.get_logger(name)
