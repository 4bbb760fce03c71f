"""The fold from events to results: pure, so tested on hand-built event sequences."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.events import (
    AttemptStarted,
    BatchStarted,
    JobCancelled,
    JobFailed,
    JobQueued,
    JobSucceeded,
    RetryScheduled,
    StreamFinished,
    Tagged,
    TextDelta,
    Tokens,
    ToolCall,
    UsageReported,
)
from orchestrator.record.aggregate import Aggregator, fold, percentile


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.seq: dict[str, int] = {}

    def tag(self, job: str, attempt: int, event: Any, dt: float = 0.5) -> Tagged:
        self.t += dt
        seq = self.seq.get(job, 0)
        self.seq[job] = seq + 1
        return Tagged(job, attempt, seq, self.t, event)


def job_events(clock: Clock, job: str, attempts: list[list[str]], *, succeed: bool) -> list[Tagged]:
    """Events of a job whose attempts stream the given deltas; every attempt but the last fails."""
    out = [clock.tag(job, 0, JobQueued(backend="sim", model=None, content_hash="h"))]
    for n, deltas in enumerate(attempts, start=1):
        out.append(clock.tag(job, n, AttemptStarted(backend="sim")))
        out.extend(clock.tag(job, n, TextDelta(d), dt=0.1) for d in deltas)
        out.append(clock.tag(job, n, UsageReported(Tokens(input=10, output=len(deltas)))))
        if n < len(attempts):
            out.append(clock.tag(job, n, RetryScheduled(1.0, "connection", "reset")))
        elif succeed:
            out.append(clock.tag(job, n, StreamFinished(stop_reason="end_turn", cost_usd=0.01)))
            out.append(clock.tag(job, n, JobSucceeded(attempts=n)))
        else:
            out.append(clock.tag(job, n, JobFailed("connection", "reset", True, n)))
    return out


deltas = st.lists(st.text(max_size=5), max_size=8)


@given(st.lists(deltas, min_size=1, max_size=4))
def test_text_is_the_concatenation_of_the_final_attempts_deltas(attempts: list[list[str]]) -> None:
    clock = Clock()
    result = fold(job_events(clock, "j", attempts, succeed=True)).results["j"]
    assert result.text == "".join(attempts[-1])
    assert result.attempts == len(attempts)
    # Every attempt's usage is counted (they were paid for); only the last one's text is kept.
    assert result.tokens == Tokens(input=10 * len(attempts), output=sum(map(len, attempts)))


def test_stream_finished_tokens_replace_the_sum_of_usage_events() -> None:
    clock = Clock()
    events = [
        clock.tag("j", 1, AttemptStarted(backend="x")),
        clock.tag("j", 1, UsageReported(Tokens(input=5))),
        clock.tag("j", 1, UsageReported(Tokens(output=7))),
        clock.tag("j", 1, StreamFinished(tokens=Tokens(input=100, output=200, cache_read=3), cost_usd=0.5)),
        clock.tag("j", 1, JobSucceeded(attempts=1)),
    ]
    result = fold(events).results["j"]
    assert result.tokens == Tokens(input=100, output=200, cache_read=3) and result.cost_usd == 0.5


def test_time_to_first_token_and_duration() -> None:
    events = [
        Tagged("j", 1, 0, 10.0, AttemptStarted(backend="x")),
        Tagged("j", 1, 1, 10.75, ToolCall("c1", "lookup", {"q": 1})),
        Tagged("j", 1, 2, 11.0, TextDelta("hi")),
        Tagged("j", 1, 3, 12.0, StreamFinished()),
        Tagged("j", 1, 4, 12.5, JobSucceeded(attempts=1)),
    ]
    result = fold(events).results["j"]
    assert result.ttft_s == 0.75 and result.duration_s == 2.5
    assert [c.name for c in result.tool_calls] == ["lookup"]


def test_unknown_cost_is_unknown_not_zero() -> None:
    events = [
        Tagged("j", 1, 0, 0.0, AttemptStarted(backend="x")),
        Tagged("j", 1, 1, 1.0, StreamFinished(tokens=Tokens(output=5))),
        Tagged("j", 1, 2, 1.0, JobSucceeded(attempts=1)),
    ]
    aggregator = fold(events)
    assert aggregator.results["j"].cost_usd is None
    assert aggregator.summary(1.0).cost_unknown_jobs == 1


def test_summary_counts_statuses_and_latency_percentiles() -> None:
    clock = Clock()
    events = [clock.tag(None, 0, BatchStarted(run_id="r", jobs=4, started_at="t", already_done=3))]  # type: ignore[arg-type]
    for i in range(3):
        events += job_events(clock, f"ok{i}", [["a"] * (i + 1)], succeed=True)
    events += job_events(clock, "bad", [["x"], ["y"]], succeed=False)
    events.append(clock.tag("late", 0, JobCancelled(reason="interrupted", attempts=0)))
    summary = fold(events).summary(20.0, stopped="interrupted")
    assert (summary.succeeded, summary.failed, summary.cancelled) == (3, 1, 1)
    assert summary.jobs == 4  # "late" was never queued in this log
    assert summary.attempts == 5 and summary.retries == 1
    assert summary.failures == {"connection": 1} and summary.stopped == "interrupted"
    assert summary.already_done == 3
    assert summary.jobs_per_s == 4 / 20.0
    assert summary.latency_p50_s is not None and summary.latency_max_s is not None
    assert summary.latency_p50_s <= summary.latency_p95_s <= summary.latency_max_s  # type: ignore[operator]


def test_without_keep_text_no_text_is_held() -> None:
    clock = Clock()
    aggregator = Aggregator(keep_text=False)
    aggregator.apply_all(job_events(clock, "j", [["a", "b"]], succeed=True))
    assert aggregator.results["j"].text is None and aggregator.results["j"].ok


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0.1, 100))
def test_percentile_is_an_element_at_the_nearest_rank(values: list[float], p: float) -> None:
    values.sort()
    q = percentile(values, p)
    assert q in values
    assert sum(v <= q for v in values) >= p / 100 * len(values)


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 50) is None


def test_a_failed_attempt_is_charged_what_its_usage_events_report() -> None:
    events = [
        Tagged("j", 1, 0, 0.0, AttemptStarted(backend="x")),
        Tagged("j", 1, 1, 1.0, UsageReported(Tokens(input=10, output=3), cost_usd=0.25)),
        Tagged("j", 1, 2, 1.0, RetryScheduled(1.0, "max_turns", "m")),
        Tagged("j", 2, 3, 2.0, AttemptStarted(backend="x")),
        Tagged("j", 2, 4, 3.0, StreamFinished(tokens=Tokens(input=10, output=5), cost_usd=0.5)),
        Tagged("j", 2, 5, 3.0, JobSucceeded(attempts=2)),
    ]
    result = fold(events).results["j"]
    assert result.cost_usd == 0.75 and result.tokens == Tokens(input=20, output=8)


def test_a_finished_stream_without_cost_or_usage_is_unknown_not_free() -> None:
    events = [
        Tagged("j", 1, 0, 0.0, AttemptStarted(backend="x")),
        Tagged("j", 1, 1, 1.0, StreamFinished(stop_reason="stop")),
        Tagged("j", 1, 2, 1.0, JobSucceeded(attempts=1)),
    ]
    assert fold(events).results["j"].cost_usd is None
