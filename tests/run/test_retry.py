from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.run.retry import backoff_delay, should_retry
from orchestrator.spec import RetryPolicy

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 20),
    base_delay=st.floats(0, 10),
    max_delay=st.floats(0, 100),
    max_retry_after=st.floats(0, 600),
)
unit = st.floats(0, 1, exclude_max=True)


@given(policies, st.integers(1, 200), st.none() | st.floats(0, 10_000), unit)
def test_delay_lies_between_retry_after_and_cap(
    policy: RetryPolicy, attempt: int, retry_after: float | None, u: float
) -> None:
    delay = backoff_delay(policy, attempt, retry_after, u)
    floor = min(retry_after or 0.0, policy.max_retry_after)
    assert floor <= delay <= max(policy.max_delay, floor)


@given(policies, st.integers(1, 200), unit)
def test_delay_without_retry_after_is_full_jitter_of_the_exponential(
    policy: RetryPolicy, attempt: int, u: float
) -> None:
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** min(attempt - 1, 60))
    assert backoff_delay(policy, attempt, None, u) == pytest.approx(u * ceiling)


def test_delay_grows_exponentially_until_the_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    almost_one = 0.999999
    delays = [backoff_delay(policy, n, None, almost_one) for n in range(1, 7)]
    assert delays == pytest.approx([1, 2, 4, 8, 10, 10], rel=1e-5)


def test_retry_after_wins_over_a_shorter_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=2.0, max_retry_after=60.0)
    assert backoff_delay(policy, 1, 5.0, 0.1) == 5.0
    assert backoff_delay(policy, 1, 3600.0, 0.1) == 60.0


def test_only_retryable_failures_below_max_attempts_retry() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert should_retry(policy, 1, True)
    assert should_retry(policy, 2, True)
    assert not should_retry(policy, 3, True)
    assert not should_retry(policy, 1, False)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0])
def test_u_outside_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(RetryPolicy(), 1, None, bad)
