"""orchestrator: run many LLM queries at once, stream every response into one tagged event bus,
and keep going through rate limits, stalls, crashes and Ctrl-C.

The public API::

    from orchestrator import run_batch
    result = run_batch(["Name three primary colors.", "What is 12*7?"], backend="sim")
    print(result.summary)

Names are imported on first use (PEP 562), so ``import orchestrator`` and ``orchestrate --help``
stay fast; ``from orchestrator import run_batch`` loads what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator._version import __version__

if TYPE_CHECKING:
    from orchestrator.api import open_batch, run_batch, run_batch_async
    from orchestrator.config.library import BatchKeywords
    from orchestrator.errors import BackendError, ConfigError, ErrorKind, FatalError, RetryableError
    from orchestrator.events import BatchSummary, Tagged, Tokens
    from orchestrator.record.aggregate import JobResult
    from orchestrator.run.batch import BatchResult, BatchRun
    from orchestrator.run.control import RunControl
    from orchestrator.spec import BatchSpec, JobSpec, Query, RetryPolicy, Timeouts

_EXPORTS = {
    "BatchKeywords": "config.library",
    "JobResult": "record.aggregate",
    "open_batch": "api",
    "run_batch": "api",
    "run_batch_async": "api",
    "BackendError": "errors",
    "ConfigError": "errors",
    "ErrorKind": "errors",
    "FatalError": "errors",
    "RetryableError": "errors",
    "BatchSummary": "events",
    "Tagged": "events",
    "Tokens": "events",
    "BatchResult": "run.batch",
    "BatchRun": "run.batch",
    "RunControl": "run.control",
    "BatchSpec": "spec",
    "JobSpec": "spec",
    "Query": "spec",
    "RetryPolicy": "spec",
    "Timeouts": "spec",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, "__version__"])


__all__ = [
    "BackendError",
    "BatchKeywords",
    "BatchResult",
    "BatchRun",
    "BatchSpec",
    "BatchSummary",
    "ConfigError",
    "ErrorKind",
    "FatalError",
    "JobResult",
    "JobSpec",
    "Query",
    "RetryPolicy",
    "RetryableError",
    "RunControl",
    "Tagged",
    "Timeouts",
    "Tokens",
    "__version__",
    "open_batch",
    "run_batch",
    "run_batch_async",
]
