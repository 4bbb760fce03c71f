"""The orchestrator's own diagnostics (structlog), apart from the event log.

The event log records what happened to the jobs; diagnostics say what the orchestrator itself
noticed: a backend that raised something it should not have (with its traceback), attempts
failing and how they were classified, limiter decisions. They go to standard error, quiet by
default (warnings only); ``orchestrate -v`` or ``ORCHESTRATOR_DEBUG=1`` shows everything.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

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
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def logger(name: str) -> Any:
    """A bound logger; configures the quiet default on first use."""
    if not _configured:
        configure()
    return structlog.get_logger(name)
