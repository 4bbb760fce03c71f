"""orchestrator: run many LLM queries at once, stream every response into one tagged event bus,
and keep going through rate limits, stalls, crashes and Ctrl-C.

The public API::

    from orchestrator import run_batch
    result = run_batch(["Name three primary colors.", "What is 12*7?"], backend="sim")
    print(result.summary)
"""

from ._version import __version__
from .aggregate import JobResult
from .api import open_batch, run_batch
from .errors import BackendError, ConfigError, FatalError, RetryableError
from .events import BatchSummary, Tagged, Tokens
from .runner import BatchResult, BatchRun, RunControl
from .spec import BatchSpec, JobSpec, Query, RetryPolicy, Timeouts

__all__ = [
    "BackendError",
    "BatchResult",
    "BatchRun",
    "BatchSpec",
    "BatchSummary",
    "ConfigError",
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
]
