"""A batch that cannot succeed stops itself: orchestrator/run/halt.py and its use by the runner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import BACKEND_WIDE, ErrorKind
from orchestrator.events import (
    JobCancelled,
    JobFailed,
    JobSkipped,
    JobsSkipped,
    JobSucceeded,
    LimiterChanged,
)
from orchestrator.run.halt import HaltWatch
from orchestrator.spec import HaltPolicy
from tests.helpers import Recorder, make_spec, run_virtual


def failed(kind: str) -> JobFailed:
    return JobFailed(ErrorKind(kind), "no", False, 1)


def test_three_auth_failures_in_a_row_halt_the_backend() -> None:
    watch = HaltWatch(HaltPolicy())
    assert watch.record("api", failed("auth")) is None
    assert watch.record("api", failed("auth")) is None
    assert watch.record("api", failed("auth")) == "halted (auth)"
    assert watch.halted == {"api": "halted (auth)"}
    assert watch.record("api", failed("auth")) is None  # said once


def test_a_success_or_another_kind_breaks_the_streak() -> None:
    watch = HaltWatch(HaltPolicy(fatal=2))
    watch.record("api", failed("auth"))
    watch.record("api", JobSucceeded(attempts=1))
    assert watch.record("api", failed("auth")) is None
    assert watch.record("api", failed("not_found")) is None
    assert watch.record("api", failed("bad_request")) is None  # about the job, not the backend
    assert watch.record("api", failed("not_found")) is None
    assert watch.record("api", failed("not_found")) == "halted (not_found)"


def test_backends_are_counted_apart() -> None:
    watch = HaltWatch(HaltPolicy(fatal=2))
    watch.record("a", failed("auth"))
    assert watch.record("b", failed("auth")) is None
    assert watch.record("a", failed("auth")) == "halted (auth)"
    assert "b" not in watch.halted


def test_fatal_zero_never_halts_and_stops_are_not_failures() -> None:
    watch = HaltWatch(HaltPolicy(fatal=0))
    for _ in range(50):
        assert watch.record("api", failed("auth")) is None
    watch = HaltWatch(HaltPolicy(fatal=1))
    assert watch.record("api", JobCancelled(reason="interrupted", attempts=1)) is None
    assert watch.record("api", JobSkipped(reason="interrupted")) is None


def test_a_failed_fraction_halts_once_enough_jobs_ended() -> None:
    watch = HaltWatch(HaltPolicy(fatal=0, failed_fraction=0.5, min_finished=4))
    assert watch.record("api", failed("server_error")) is None
    assert watch.record("api", failed("server_error")) is None
    assert watch.record("api", failed("server_error")) is None  # 3 of 3, but fewer than 4 ended
    assert watch.record("api", JobSucceeded(attempts=1)) == "halted (3 of 4 jobs failed)"


@given(st.lists(st.sampled_from([*sorted(BACKEND_WIDE), "bad_request", "ok"]), max_size=30))
def test_a_halt_needs_exactly_fatal_equal_backend_wide_failures_in_a_row(outcomes: list[str]) -> None:
    watch = HaltWatch(HaltPolicy(fatal=3))
    for n, outcome in enumerate(outcomes):
        terminal = JobSucceeded(attempts=1) if outcome == "ok" else failed(outcome)
        reason = watch.record("api", terminal)
        last3 = outcomes[max(0, n - 2) : n + 1]
        streak = len(last3) == 3 and len(set(last3)) == 1 and last3[0] in BACKEND_WIDE
        if reason is not None:
            assert streak and reason == f"halted ({outcome})"
            break
        assert not streak


def test_a_batch_behind_a_bad_key_sends_three_requests_not_fifty() -> None:
    jobs = [{"id": f"j{i}", "prompt": f"p{i}", "sim": {"faults": ["auth"]}} for i in range(50)]
    recorder = Recorder()
    result = run_virtual(make_spec(jobs, concurrency=1), subscribers=[recorder])
    attempts = [t for t in recorder.events if t.event.kind == "attempt_started"]
    assert len(attempts) == 3
    assert result.summary.stopped == "halted (auth)"
    assert not result.ok
    skipped = [t.event for t in recorder.events if isinstance(t.event, JobsSkipped)]
    assert [(e.count, e.reason) for e in skipped] == [(47, "halted (auth)")]
    assert result.summary.skipped == 47
    changes = [t.event for t in recorder.events if isinstance(t.event, LimiterChanged)]
    assert [(c.backend, c.change) for c in changes] == [("sim", "halted")]


def test_halting_can_be_turned_off() -> None:
    jobs = [{"id": f"j{i}", "prompt": f"p{i}", "sim": {"faults": ["auth"]}} for i in range(10)]
    result = run_virtual(make_spec(jobs, concurrency=2, halt={"fatal": 0}))
    assert result.summary.failed == 10 and result.summary.stopped is None


def test_jobs_already_running_finish_when_the_backend_halts() -> None:
    # Four workers: the first three auth failures halt the lane while a fourth job runs fine.
    jobs = [{"id": "slow", "prompt": "p", "sim": {"reply_tokens": 50, "tokens_per_s": 10}}] + [
        {"id": f"bad{i}", "prompt": "p", "sim": {"faults": ["auth"]}} for i in range(10)
    ]
    # dedupe off: the bad jobs' identical requests are each sent (it is their failures that count)
    result = run_virtual(make_spec(jobs, concurrency=4, dedupe=False))
    assert result.jobs["slow"].status == "succeeded"
    assert result.summary.stopped == "halted (auth)"
    # The third failure halts; at most the two other workers' jobs were still in flight then.
    assert 3 <= result.summary.failed <= 5
    assert result.summary.failed + result.summary.skipped == 10
