"""A job's life as pure transitions: orchestrator/run/job.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import FatalError, RetryableError
from orchestrator.events import (
    JobCancelled,
    JobFailed,
    JobSkipped,
    JobSucceeded,
    OutputParsed,
    StreamFinished,
    TextDelta,
    TextRetracted,
    Tokens,
    UsageReported,
)
from orchestrator.run.job import (
    Failure,
    JobState,
    Retry,
    attempt_failure,
    failure_from,
    internal_failure,
    leftover_terminal,
    next_step,
)
from orchestrator.spec import JobSpec, OutputSchema, RetryPolicy, Timeouts


def job(**overrides: object) -> JobState:
    overrides.setdefault("prompt", "p")
    spec = JobSpec(id="j", backend="sim", **overrides)  # type: ignore[arg-type]
    return JobState(spec=spec)


def test_a_success_ends_the_job_with_its_attempt_count() -> None:
    state = job()
    state.begin_attempt(0.0)
    state.begin_attempt(1.0)
    assert next_step(state, None, now=2.0, seed=0) == JobSucceeded(attempts=2)


def test_a_fatal_failure_ends_the_job_at_once() -> None:
    state = job(retry=RetryPolicy(max_attempts=5))
    state.begin_attempt(0.0)
    step = next_step(state, Failure("auth", "bad key", False), now=1.0, seed=0)
    assert step == JobFailed("auth", "bad key", False, 1)


def test_a_retryable_failure_schedules_a_retry_after_its_backoff() -> None:
    state = job(retry=RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=30.0))
    state.begin_attempt(0.0)
    step = next_step(state, Failure("overloaded", "529", True), now=10.0, seed=7)
    assert isinstance(step, Retry)
    assert step.event.error_kind == "overloaded"
    assert 0.0 <= step.event.delay_s <= 1.0  # full jitter of base_delay for the first retry
    assert step.due == 10.0 + step.event.delay_s
    assert not step.urgent


def test_the_backoff_is_the_same_for_the_same_seed_job_and_attempt() -> None:
    a, b = job(), job()
    for state in (a, b):
        state.begin_attempt(0.0)
    failure = Failure("server_error", "500", True)
    assert next_step(a, failure, now=0.0, seed=3) == next_step(b, failure, now=0.0, seed=3)
    assert next_step(a, failure, now=0.0, seed=3) != next_step(a, failure, now=0.0, seed=4)


def test_retry_after_is_never_undercut() -> None:
    state = job(retry=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=0.2))
    state.begin_attempt(0.0)
    step = next_step(state, Failure("rate_limited", "429", True, retry_after=12.0), now=0.0, seed=0)
    assert isinstance(step, Retry)
    assert step.event.delay_s == 12.0
    assert step.event.retry_after_s == 12.0


def test_the_last_allowed_attempt_fails_for_good() -> None:
    state = job(retry=RetryPolicy(max_attempts=2))
    state.begin_attempt(0.0)
    state.begin_attempt(1.0)
    step = next_step(state, Failure("server_error", "500", True), now=2.0, seed=0)
    assert step == JobFailed("server_error", "500", True, 2)


def test_the_job_timeout_starts_with_the_first_attempt_only() -> None:
    state = job(timeouts=Timeouts(job=10.0))
    assert state.deadline is None  # waiting for a slot is not running
    state.begin_attempt(5.0)
    assert state.deadline == 15.0
    state.begin_attempt(9.0)
    assert state.deadline == 15.0
    assert not state.timed_out(14.9)
    assert state.timed_out(15.0)


def test_a_retry_due_after_the_job_timeout_is_urgent_at_the_deadline() -> None:
    state = job(timeouts=Timeouts(job=10.0), retry=RetryPolicy(max_attempts=5))
    state.begin_attempt(0.0)
    step = next_step(state, Failure("rate_limited", "429", True, retry_after=60.0), now=1.0, seed=0)
    assert isinstance(step, Retry)
    assert step.urgent and step.due == 10.0


def test_a_job_timeout_failure_ends_the_job_as_timeout_job() -> None:
    state = job(timeouts=Timeouts(job=3.0))
    state.begin_attempt(0.0)
    step = next_step(state, Failure("timeout_job", "", False), now=3.0, seed=0)
    assert step == JobFailed("timeout_job", "job timed out after 3s", False, 1)


def test_a_stop_cancels_a_started_job_and_skips_one_that_never_started() -> None:
    started, waiting = job(), job()
    started.begin_attempt(0.0)
    assert leftover_terminal(started, "interrupted") == JobCancelled(reason="interrupted", attempts=1)
    assert leftover_terminal(waiting, "interrupted") == JobSkipped(reason="interrupted")


def test_an_attempt_that_returned_without_stream_finished_broke_the_contract() -> None:
    state = job()
    state.begin_attempt(0.0)
    failure = attempt_failure(state, state.spec.timeouts, fired=None, attempt_deadline=0.0)
    assert failure is not None and failure.kind == "protocol" and failure.retryable
    state.observe(StreamFinished(stop_reason="end_turn"))
    assert attempt_failure(state, state.spec.timeouts, fired=None, attempt_deadline=0.0) is None


@pytest.mark.parametrize(
    ("fired", "attempt_deadline", "kind"),
    [
        ("idle", 0.0, "timeout_idle"),
        ("deadline", 100.0, "timeout_job"),
        ("deadline", 50.0, "timeout_attempt"),
    ],
)
def test_what_the_watchdog_cut_names_the_failure(fired: str, attempt_deadline: float, kind: str) -> None:
    state = job(timeouts=Timeouts(idle=5.0, attempt=50.0, job=100.0))
    state.begin_attempt(0.0)
    failure = attempt_failure(state, state.spec.timeouts, fired=fired, attempt_deadline=attempt_deadline)
    assert failure is not None and failure.kind == kind


def test_an_attempts_cost_is_the_stream_total_else_its_usage() -> None:
    state = job()
    state.begin_attempt(0.0)
    assert state.attempt_spent().tokens.total == 0
    state.observe(UsageReported(Tokens(input=10, output=5), cost_usd=0.25))
    state.observe(UsageReported(Tokens(output=5), cost_usd=None))
    spent = state.attempt_spent()
    assert spent.cost_usd == 0.25 and spent.tokens.total == 20
    state.observe(StreamFinished(stop_reason="end_turn", tokens=Tokens(input=10, output=12), cost_usd=0.5))
    spent = state.attempt_spent()
    assert spent.cost_usd == 0.5 and spent.tokens.total == 22
    assert state.stream_finished
    state.begin_attempt(1.0)  # a new attempt starts from nothing
    assert state.attempt_spent().tokens.total == 0 and not state.stream_finished
    state.observe(TextDelta("x"))
    assert not state.stream_finished


def test_backend_errors_keep_their_kind_even_inside_groups() -> None:
    error = RetryableError("slow down", kind="rate_limited", retry_after=2.0)
    assert failure_from(error) == Failure("rate_limited", "slow down", True, 2.0)
    group = ExceptionGroup("g", [ValueError("noise"), ExceptionGroup("h", [FatalError("no", kind="auth")])])
    assert failure_from(group) == Failure("auth", "no", False)
    assert failure_from(KeyError("bug")) is None
    assert internal_failure(KeyError("bug")) == Failure("internal", "KeyError: 'bug'", False)


@given(
    max_attempts=st.integers(1, 6),
    outcomes=st.lists(st.sampled_from(["ok", "retryable", "fatal"]), min_size=1, max_size=10),
)
def test_every_job_ends_exactly_once_within_its_attempts(max_attempts: int, outcomes: list[str]) -> None:
    state = job(retry=RetryPolicy(max_attempts=max_attempts))
    failures = {
        "ok": None,
        "retryable": Failure("server_error", "500", True),
        "fatal": Failure("bad_request", "400", False),
    }
    terminal = None
    for n, outcome in enumerate(outcomes):
        state.begin_attempt(float(n))
        step = next_step(state, failures[outcome], now=float(n), seed=0)
        if not isinstance(step, Retry):
            terminal = step
            break
    assert state.attempt <= max_attempts
    if terminal is None:  # every attempt so far failed and may be retried
        assert set(outcomes) == {"retryable"} and len(outcomes) < max_attempts
    elif outcomes[state.attempt - 1] == "ok":
        assert terminal == JobSucceeded(attempts=state.attempt)
    else:
        assert isinstance(terminal, JobFailed)
        assert outcomes[state.attempt - 1] == "fatal" or state.attempt == max_attempts


# --- structured output -------------------------------------------------------------------------

SCHEMA = OutputSchema({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})


def replied(state: JobState, text: str) -> Failure | None:
    state.begin_attempt(0.0)
    state.observe(TextDelta(text))
    state.observe(StreamFinished())
    return attempt_failure(state, state.spec.timeouts, fired=None, attempt_deadline=0.0)


def test_a_reply_that_meets_the_schema_succeeds_with_its_parsed_value() -> None:
    state = job(output_schema=SCHEMA)
    assert replied(state, '{"n": 3}') is None
    assert state.parsed == OutputParsed({"n": 3})
    assert next_step(state, None, now=1.0, seed=0) == JobSucceeded(attempts=1)


def test_retracted_text_is_not_part_of_the_checked_reply() -> None:
    state = job(output_schema=SCHEMA)
    state.begin_attempt(0.0)
    for event in (TextDelta('{"n": 3}'), TextDelta("garbage"), TextRetracted(7), StreamFinished()):
        state.observe(event)
    assert attempt_failure(state, state.spec.timeouts, fired=None, attempt_deadline=0.0) is None


def test_an_invalid_reply_is_retried_at_once_on_its_own_budget() -> None:
    state = job(output_schema=SCHEMA, retry=RetryPolicy(max_attempts=1, max_invalid_output=2))
    for _ in range(2):
        failure = replied(state, '{"n": "three"}')
        assert failure is not None and failure.kind == "invalid_output"
        step = next_step(state, failure, now=5.0, seed=0)
        assert isinstance(step, Retry) and step.due == 5.0 and step.event.delay_s == 0.0
    failure = replied(state, "Three.")
    step = next_step(state, failure, now=5.0, seed=0)
    assert step == JobFailed(
        "invalid_output",
        "the reply is not JSON: unexpected character, expected a JSON value: line 1 column 1 (char 0)",
        True,
        3,
    )


def test_invalid_replies_do_not_use_up_the_other_failures_attempts() -> None:
    state = job(output_schema=SCHEMA, retry=RetryPolicy(max_attempts=2, max_invalid_output=2))
    for _ in range(2):
        assert isinstance(next_step(state, replied(state, "no"), now=0.0, seed=0), Retry)
    state.begin_attempt(0.0)  # attempt 3, the second of max_attempts for other failures
    step = next_step(state, Failure("server_error", "500", True), now=0.0, seed=0)
    assert isinstance(step, JobFailed) is False
    state.begin_attempt(0.0)
    assert isinstance(next_step(state, Failure("server_error", "500", True), now=0.0, seed=0), JobFailed)


def test_reask_puts_the_bad_reply_and_the_reason_into_the_next_request() -> None:
    state = job(output_schema=SCHEMA, retry=RetryPolicy(reask=True), prompt="Count.")
    assert state.request() is state.spec
    replied(state, '{"n": "three"}')
    request = state.request()
    assert request.prompt == ""
    assert [(m.role, m.content) for m in request.messages] == [
        ("user", "Count."),
        ("assistant", '{"n": "three"}'),
        (
            "user",
            'Your reply was not accepted: the reply does not match the schema at n: "three" is not of '
            'type "integer". Reply again with only the JSON value, meeting the schema.',
        ),
    ]


def test_without_reask_the_next_request_is_the_job_as_it_was() -> None:
    state = job(output_schema=SCHEMA)
    replied(state, "no")
    assert state.request() is state.spec


def test_an_invalid_output_a_backend_reports_counts_against_the_same_budget() -> None:
    state = job(retry=RetryPolicy(max_invalid_output=1))
    failure = Failure("invalid_output", "the CLI's own re-asks ran out", True)
    state.begin_attempt(0.0)
    assert isinstance(next_step(state, failure, now=0.0, seed=0), Retry)
    state.begin_attempt(0.0)
    assert next_step(state, failure, now=0.0, seed=0) == JobFailed(
        "invalid_output", "the CLI's own re-asks ran out", True, 2
    )


def test_an_ended_job_lets_go_of_its_last_attempt() -> None:
    state = job(output_schema=OutputSchema({"type": "object"}))
    state.begin_attempt(0.0)
    state.observe(TextDelta("{}"))
    state.observe(StreamFinished(tokens=Tokens(input=1, output=1)))
    assert state.attempt_spent().tokens == Tokens(input=1, output=1)
    state.end()
    assert state.done and state.reply is None
    assert state.attempt_spent().tokens == Tokens()  # the meter of no attempt
    state.begin_attempt(1.0)  # (not done by the runner; shown for the meter's sake)
    state.observe(UsageReported(tokens=Tokens(output=2)))
    assert state.attempt_spent().tokens == Tokens(output=2)
    assert JobState(spec=state.spec).attempt_spent().tokens == Tokens()  # the shared one is unchanged
