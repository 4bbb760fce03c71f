"""The retry policy and its backoff schedule: pure functions, no clock, no hidden randomness."""

from __future__ import annotations

from orchestrator.spec import RetryPolicy


def backoff_delay(policy: RetryPolicy, failed_attempt: int, retry_after: float | None, u: float) -> float:
    """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed.

    ``u`` is a uniform random number in [0, 1) supplied by the caller, so the schedule is
    reproducible. With full jitter the delay is ``u * min(max_delay, base_delay * 2**(n-1))``,
    and never shorter than the server's ``retry_after`` (itself capped at ``max_retry_after``).
    The result lies in ``[min(retry_after, max_retry_after), max(max_delay, that)]``.
    """
    if failed_attempt < 1:
        raise ValueError("failed_attempt counts from 1")
    if not 0.0 <= u < 1.0:
        raise ValueError("u must lie in [0, 1)")
    # 2**n overflows float for absurd attempt numbers; the cap makes larger exponents moot.
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** min(failed_attempt - 1, 60))
    delay = u * ceiling
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, policy.max_retry_after))
    return delay


def should_retry(policy: RetryPolicy, failed_attempt: int, retryable: bool) -> bool:
    """Whether a job whose attempt ``failed_attempt`` failed gets another attempt."""
    return retryable and failed_attempt < policy.max_attempts
