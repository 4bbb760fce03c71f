"""The runner's contract, on trio's virtual clock: terminal events, seq, limits, timeouts, retries."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog.testing
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.backends import register, unregister
from orchestrator.backends.sim.backend import FAULTS
from orchestrator.errors import ErrorKind, RetryableError
from orchestrator.events import (
    TERMINAL_EVENTS,
    AttemptStarted,
    JobCancelled,
    JobFailed,
    JobsSkipped,
    JobSucceeded,
    RetryScheduled,
    StreamFinished,
    Tagged,
    TextDelta,
)
from orchestrator.record.log import read_log
from orchestrator.run import batch, runner, watchdog
from orchestrator.run.batch import execute
from orchestrator.run.control import RunControl
from tests.helpers import FakeBackendKind, Recorder, as_logged, job_ends, make_spec, run_virtual

ENDS_ATTEMPT = (RetryScheduled, *TERMINAL_EVENTS)


def max_in_flight(events: Sequence[Tagged]) -> int:
    """Attempts running at once, from attempt_started to the event that ends the attempt."""
    running: set[str] = set()
    peak = 0
    for tagged in events:
        if isinstance(tagged.event, AttemptStarted):
            assert tagged.job_id not in running
            running.add(tagged.job_id)  # type: ignore[arg-type]
            peak = max(peak, len(running))
        elif isinstance(tagged.event, ENDS_ATTEMPT):
            running.discard(tagged.job_id)  # type: ignore[arg-type]
    return peak


def expected_outcome(faults: Sequence[str], max_attempts: int) -> tuple[str, int]:
    """What a sim job with these per-attempt faults must end as, and after how many attempts."""
    for attempt in range(1, max_attempts + 1):
        fault = faults[attempt - 1] if attempt <= len(faults) else "ok"
        if fault == "ok":
            return "job_succeeded", attempt
        if fault in ("fatal", "auth"):
            return "job_failed", attempt
    return "job_failed", max_attempts


fault_lists = st.lists(st.sampled_from(("ok", *FAULTS)), max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=st.lists(fault_lists, min_size=1, max_size=10),
    concurrency=st.integers(1, 4),
    max_attempts=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_batch_invariants_under_random_faults(
    jobs: list[list[str]], concurrency: int, max_attempts: int, seed: int
) -> None:
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "run.jsonl")
        spec = make_spec(
            [{"id": f"j{i}", "prompt": f"p{i}", "sim": {"faults": faults}} for i, faults in enumerate(jobs)],
            concurrency=concurrency,
            seed=seed,
            log=log,
            halt={"fatal": 0},  # every job runs to its own end (halting is tested in test_halt.py)
            retry={"max_attempts": max_attempts, "base_delay": 0.5, "max_delay": 4},
            timeouts={"idle": 2.0},
            sim={
                "ttft": 0.1,
                "tokens_per_s": 20,
                "reply_tokens": 6,
                "retry_after": 1.5,
                "fault_after_tokens": 2,
            },
        )
        result = run_virtual(spec, subscribers=[recorder])
        logged = [r.tagged for r in read_log(log) if r.tagged is not None]

    # every delivered event is in the log, once, in order (runs of deltas as one line)
    assert as_logged(logged) == as_logged(recorder.events)
    assert len(logged) <= len(recorder.events)
    assert max_in_flight(recorder.events) <= concurrency
    for i, faults in enumerate(jobs):
        events = recorder.of_job(f"j{i}")
        assert [t.seq for t in events] == list(range(len(events)))  # gap-free across attempts
        terminals = [t for t in events if isinstance(t.event, TERMINAL_EVENTS)]
        assert len(terminals) == 1 and terminals[0] is events[-1]
        attempts = sum(isinstance(t.event, AttemptStarted) for t in events)
        assert attempts <= max_attempts
        kind, expected_attempts = expected_outcome(faults, max_attempts)
        assert (terminals[0].event.kind, attempts) == (kind, expected_attempts)
    assert result.summary.succeeded + result.summary.failed == len(jobs)


def test_stalled_stream_is_caught_after_exactly_the_idle_timeout(recorder: Recorder) -> None:
    spec = make_spec(
        [{"id": "s", "prompt": "p", "sim": {"faults": ["stall"], "fault_after_tokens": 3}}],
        timeouts={"idle": 5.0},
        sim={"ttft": 1.0, "tokens_per_s": 10},
    )
    result = run_virtual(spec, subscribers=[recorder])
    events = recorder.of_job("s")
    retry = next(t for t in events if isinstance(t.event, RetryScheduled))
    last_delta = [t for t in events if isinstance(t.event, TextDelta) and t.attempt == 1][-1]
    assert retry.event.error_kind == "timeout_idle"
    assert retry.ts - last_delta.ts == pytest.approx(5.0)
    assert result.jobs["s"].ok and result.jobs["s"].attempts == 2


def test_attempt_timeout_cuts_a_slow_stream_and_retries(recorder: Recorder) -> None:
    spec = make_spec(
        [{"id": "slow", "prompt": "p"}],
        timeouts={"attempt": 3.0, "idle": 10.0},
        retry={"max_attempts": 2},
        sim={"ttft": 0.5, "tokens_per_s": 2, "reply_tokens": 100},
    )
    result = run_virtual(spec, subscribers=[recorder])
    events = recorder.of_job("slow")
    starts = [t.ts for t in events if isinstance(t.event, AttemptStarted)]
    retry = next(t for t in events if isinstance(t.event, RetryScheduled))
    assert retry.event.error_kind == "timeout_attempt"
    assert retry.ts - starts[0] == pytest.approx(3.0)
    failed = result.jobs["slow"]
    assert failed.status == "failed" and failed.error_kind == "timeout_attempt" and failed.attempts == 2


def test_job_timeout_covers_attempts_and_backoff(recorder: Recorder) -> None:
    spec = make_spec(
        [{"id": "j", "prompt": "p", "sim": {"faults": ["rate_limit"] * 10, "retry_after": 4.0}}],
        timeouts={"job": 10.0},
        retry={"max_attempts": 10},
        sim={"ttft": 0.5},
    )
    result = run_virtual(spec, subscribers=[recorder])
    end = recorder.of_job("j")[-1]
    assert isinstance(end.event, JobFailed) and end.event.error_kind == "timeout_job"
    assert end.ts == pytest.approx(10.0, abs=1e-6)
    assert result.jobs["j"].attempts == 3  # starts at 0, 4.5 and 9.0


def test_retry_waits_at_least_the_servers_retry_after(recorder: Recorder) -> None:
    spec = make_spec(
        [{"id": "r", "prompt": "p", "sim": {"faults": ["rate_limit"], "retry_after": 7.0}}],
        retry={"base_delay": 0.1, "max_delay": 1.0},
    )
    run_virtual(spec, subscribers=[recorder])
    events = recorder.of_job("r")
    retry = next(t for t in events if isinstance(t.event, RetryScheduled))
    second = [t for t in events if isinstance(t.event, AttemptStarted)][1]
    assert retry.event.delay_s == 7.0 and retry.event.retry_after_s == 7.0
    assert second.ts - retry.ts == pytest.approx(7.0)


def test_fatal_errors_are_not_retried(recorder: Recorder) -> None:
    spec = make_spec([{"id": "f", "prompt": "p", "sim": {"faults": ["fatal"]}}], retry={"max_attempts": 5})
    result = run_virtual(spec, subscribers=[recorder])
    assert recorder.kinds("f").count("attempt_started") == 1
    assert result.jobs["f"].error_kind == "bad_request"
    assert not result.summary.ok and result.summary.failures == {"bad_request": 1}


def test_a_retried_attempts_partial_output_stays_out_of_the_result(recorder: Recorder) -> None:
    spec = make_spec(
        [
            {
                "id": "m",
                "prompt": "p",
                "sim": {"faults": ["mid_stream"], "fault_after_tokens": 4, "text": "a b c d e f g"},
            }
        ]
    )
    result = run_virtual(spec, subscribers=[recorder])
    first = [t.event.text for t in recorder.of_job("m") if isinstance(t.event, TextDelta) and t.attempt == 1]
    final = [t.event.text for t in recorder.of_job("m") if isinstance(t.event, TextDelta) and t.attempt == 2]
    assert first == ["a", " b", " c", " d"]  # in the log
    assert result.jobs["m"].text == "".join(final) == "a b c d e f g"
    assert result.jobs["m"].tokens.output == 7  # the failed attempt reported no usage


def test_global_and_per_backend_limits_bound_in_flight_attempts(recorder: Recorder) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(20)],
        concurrency=10,
        backends={"sim": {"concurrency": 3}},
        sim={"ttft": 1.0, "tokens_per_s": 5, "reply_tokens": 3, "latency_jitter": 0.5},
    )
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.succeeded == 20
    assert max_in_flight(recorder.events) == 3


def test_backoff_gives_the_slot_to_another_job(recorder: Recorder) -> None:
    spec = make_spec(
        [{"id": "a", "prompt": "p", "sim": {"faults": ["server_error"]}}, {"id": "b", "prompt": "p"}],
        concurrency=1,
        retry={"base_delay": 10.0, "max_delay": 10.0},
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 2},
    )
    run_virtual(spec, subscribers=[recorder])
    b_start = next(t.ts for t in recorder.of_job("b") if isinstance(t.event, AttemptStarted))
    retry = next(t.event for t in recorder.of_job("a") if isinstance(t.event, RetryScheduled))
    assert retry.delay_s > 0.1  # had a held its slot while waiting, b would start after 1.0 + delay
    assert b_start == pytest.approx(1.0)


async def test_stop_cancels_running_jobs_and_skips_unstarted_ones(
    autojump_clock: Any, recorder: Recorder
) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(6)], concurrency=2, sim={"ttft": 1.0, "tokens_per_s": 1, "reply_tokens": 5}
    )
    control = RunControl()
    async with trio.open_nursery() as nursery:

        async def stop_later() -> None:
            await trio.sleep(2.5)
            control.cancel("interrupted")

        nursery.start_soon(stop_later)
        result = await execute(spec, subscribers=[recorder], control=control)
    ends = job_ends(recorder.events, [job.id for job in spec.jobs])
    assert (
        sorted(kind for kinds in ends.values() for kind in kinds)
        == ["job_cancelled"] * 2 + ["jobs_skipped"] * 4
    )
    stop_events = [t.event for t in recorder.events if isinstance(t.event, JobCancelled | JobsSkipped)]
    assert all(e.reason == "interrupted" for e in stop_events)
    assert [e.count for e in stop_events if isinstance(e, JobsSkipped)] == [4]  # one event for all four
    assert (
        result.summary.stopped == "interrupted"
        and result.summary.cancelled == 2
        and result.summary.skipped == 4
    )
    assert recorder.events[-1].event.kind == "batch_finished"


def test_every_job_is_announced_in_order_before_it_starts_and_work_starts_at_once(
    recorder: Recorder,
) -> None:
    jobs = 700  # several announcement chunks
    spec = make_spec(
        [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(jobs)],
        concurrency=3,
        sim={"ttft": 0.01, "reply_tokens": 1},
    )
    run_virtual(spec, subscribers=[recorder])
    queued = [i for i, t in enumerate(recorder.events) if t.event.kind == "job_queued"]
    assert [recorder.events[i].job_id for i in queued] == [f"q{i}" for i in range(jobs)]
    for i in range(jobs):
        assert recorder.kinds(f"q{i}")[:3] == ["job_queued", "job_input", "attempt_started"]
    first_start = next(i for i, t in enumerate(recorder.events) if t.event.kind == "attempt_started")
    assert first_start < queued[-1]  # the first attempts did not wait for every announcement


def test_a_batch_stopped_before_it_starts_still_ends_every_job_once(recorder: Recorder) -> None:
    spec = make_spec([{"id": f"q{i}", "prompt": f"p{i}"} for i in range(300)], concurrency=2)
    control = RunControl()
    control.cancel("interrupted")
    result = run_virtual(spec, subscribers=[recorder], control=control)
    skips = [t.event for t in recorder.events if isinstance(t.event, JobsSkipped)]
    assert skips == [JobsSkipped(reason="interrupted", count=300, ranges=((0, 300),))]
    announced = [t for t in recorder.events if t.job_id is not None]
    assert all(t.event.kind in ("job_queued", "job_input") for t in announced)
    assert sum(t.event.kind == "job_queued" for t in announced) < 300
    assert result.summary.jobs == 300 and result.summary.skipped == 300
    assert len(result.jobs) == 300 and result.jobs["q299"].status == "skipped"
    assert result.jobs["q7"].error == "interrupted" and list(result.jobs)[:2] == ["q0", "q1"]


def test_a_stop_mid_batch_ends_announced_and_unannounced_jobs_in_one_event(recorder: Recorder) -> None:
    ids = [f"q{i}" for i in range(2000)]  # more than the first announcement chunks
    spec = make_spec(
        [{"id": job, "prompt": job} for job in ids],
        concurrency=4,  # four announced at once, only one of them starts: the others wait
        backends={"sim": {"concurrency": 1}},
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 1},
    )
    control = RunControl()

    class StopAtFirstAttempt(Recorder):
        async def deliver(self, batch: Sequence[Tagged]) -> None:
            await super().deliver(batch)
            if any(isinstance(t.event, AttemptStarted) for t in batch):
                control.cancel("interrupted")  # while jobs are still being announced

    stopper = StopAtFirstAttempt()
    result = run_virtual(spec, subscribers=[stopper, recorder], control=control)
    ends = job_ends(recorder.events, ids)
    assert all(len(kinds) == 1 for kinds in ends.values())  # every job ends exactly once
    queued = [t.job_id for t in recorder.events if t.event.kind == "job_queued"]
    assert queued == ids[: len(queued)] and len(queued) < len(ids)  # some never announced
    skipped = [job for job, kinds in ends.items() if kinds == ["jobs_skipped"]]
    assert set(queued) & set(skipped)  # and some announced jobs never started
    assert len([t for t in recorder.events if isinstance(t.event, JobsSkipped)]) == 1
    summary = result.summary
    assert summary.jobs == len(ids) and summary.skipped == len(skipped)
    assert summary.cancelled == summary.attempts >= 1 and summary.cancelled + summary.skipped == len(ids)
    assert [job for job, r in result.jobs.items() if r.status == "skipped"] == skipped


def test_the_announcer_keeps_a_bounded_window_of_jobs_ahead_of_the_workers(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "ANNOUNCE_AHEAD", 16)
    ids = [f"q{i}" for i in range(600)]
    spec = make_spec([{"id": job, "prompt": job} for job in ids], concurrency=2, sim={"ttft": 1.0})
    waiting = ahead = 0  # jobs announced and not started yet; the most at any time

    class Ahead:
        async def deliver(self, batch: Sequence[Tagged]) -> None:
            nonlocal waiting, ahead
            for t in batch:
                waiting += {"job_queued": 1, "attempt_started": -1}.get(t.event.kind, 0)
                ahead = max(ahead, waiting)

    result = run_virtual(spec, subscribers=[Ahead(), recorder])
    assert result.summary.succeeded == len(ids)
    # The first concurrency jobs, a chunk, and the window: not the whole batch at once.
    assert ahead <= 2 + runner._ANNOUNCE_CHUNK + 16 < len(ids)
    queued = [t.job_id for t in recorder.events if t.event.kind == "job_queued"]
    assert queued == ids


def test_a_stop_after_ended_jobs_were_let_go_still_ends_every_job_once(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "ANNOUNCE_AHEAD", 16)
    ids = [f"q{i}" for i in range(1000)]
    spec = make_spec(
        [{"id": job, "prompt": job} for job in ids],
        concurrency=8,
        sim={"ttft": 1.0, "latency_jitter": 0.9, "reply_tokens": 1},
    )
    control = RunControl()

    class StopLater(Recorder):
        succeeded = 0

        async def deliver(self, batch: Sequence[Tagged]) -> None:
            await super().deliver(batch)
            self.succeeded += sum(t.event.kind == "job_succeeded" for t in batch)
            if self.succeeded >= 600:
                control.cancel("interrupted")  # long after the first ended jobs were let go

    result = run_virtual(spec, subscribers=[StopLater(), recorder], control=control)
    ends = job_ends(recorder.events, ids)
    assert all(len(kinds) == 1 for kinds in ends.values())  # every job ends exactly once
    assert {kinds[0] for kinds in ends.values()} == {"job_succeeded", "job_cancelled", "jobs_skipped"}
    summary = result.summary
    assert summary.succeeded + summary.cancelled + summary.skipped == len(ids)
    assert [job for job, r in result.jobs.items() if r.status == "skipped"] == [
        job for job, kinds in ends.items() if kinds == ["jobs_skipped"]
    ]


async def test_a_stop_while_the_bus_is_full_still_gives_every_job_its_job_queued_first(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "CHANNEL_SIZE", 8)  # the announcer soon waits on a full bus
    release = trio.Event()

    class Stuck(Recorder):
        async def deliver(self, batch: Sequence[Tagged]) -> None:
            await super().deliver(batch)
            await release.wait()

    stuck = Stuck()
    spec = make_spec([{"id": f"q{i}", "prompt": f"p{i}"} for i in range(100)], concurrency=2)
    control = RunControl()
    async with trio.open_nursery() as nursery:

        async def stop_then_release() -> None:
            await trio.testing.wait_all_tasks_blocked()
            control.cancel("interrupted")  # the announcer is cancelled in the middle of a send
            await trio.testing.wait_all_tasks_blocked()
            release.set()

        nursery.start_soon(stop_then_release)
        await execute(spec, subscribers=[stuck], control=control)
    for i in range(100):
        events = stuck.of_job(f"q{i}")
        assert [t.seq for t in events] == list(range(len(events)))
        assert not events or events[0].event.kind == "job_queued"
    ends = job_ends(stuck.events, [f"q{i}" for i in range(100)])
    assert all(len(kinds) == 1 for kinds in ends.values())


def test_batch_deadline_stops_the_batch(recorder: Recorder) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(4)],
        concurrency=2,
        deadline=3.0,
        sim={"ttft": 1.0, "tokens_per_s": 4, "reply_tokens": 6},
    )
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.stopped == "deadline"
    assert result.summary.succeeded == 2 and result.summary.cancelled == 2
    assert recorder.events[-1].ts == pytest.approx(3.0)


@attrs.frozen
class _Boom(FakeBackendKind):
    name = "boom"

    async def stream(self, job: Any, attempt: int, emit: Any) -> None:
        if job.prompt == "bug":
            raise ZeroDivisionError("backend bug")
        if job.prompt == "group":
            raise ExceptionGroup("from a nursery", [RetryableError("reset", kind=ErrorKind.CONNECTION)])
        if job.prompt == "silent":
            return
        if job.prompt == "first-then-stall":  # a backend that times the wait for its first event
            watchdog.wait_for_first_event()
            await trio.sleep(2.0)  # idle does not count yet
            await emit(TextDelta("x"))
            await trio.sleep_forever()  # now it does
        await emit(TextDelta("x"))


@pytest.fixture
def boom() -> Any:
    register("boom", _Boom())
    yield
    unregister("boom")


def test_idle_counts_from_the_first_event_of_a_backend_that_waited_for_it(
    boom: Any, recorder: Recorder
) -> None:
    spec = make_spec(
        [{"id": "s", "prompt": "first-then-stall"}],
        backend="boom",
        timeouts={"idle": 0.5, "attempt": 60.0},
        retry={"max_attempts": 1},
    )
    result = run_virtual(spec, subscribers=[recorder])
    events = recorder.of_job("s")
    first = next(t for t in events if isinstance(t.event, TextDelta))
    end = next(t for t in events if isinstance(t.event, JobFailed))
    assert result.jobs["s"].error_kind == "timeout_idle"
    assert end.ts - first.ts == pytest.approx(0.5)


def test_backend_bugs_fail_one_job_not_the_batch(boom: Any, recorder: Recorder) -> None:
    spec = make_spec(
        [
            {"id": "bug", "prompt": "bug"},
            {"id": "group", "prompt": "group"},
            {"id": "silent", "prompt": "silent"},
        ],
        backend="boom",
        retry={"max_attempts": 2, "base_delay": 0.1},
    )
    with structlog.testing.capture_logs() as logs:
        result = run_virtual(spec, subscribers=[recorder])
    assert result.jobs["bug"].error_kind == "internal" and "ZeroDivisionError" in (
        result.jobs["bug"].error or ""
    )
    bugs = [entry for entry in logs if entry["event"] == "backend raised an unexpected exception"]
    # The traceback is kept, as redacted text (a server's message in it may quote a key).
    assert len(bugs) == 1 and "ZeroDivisionError" in bugs[0]["exception"]
    assert "Traceback (most recent call last)" in bugs[0]["exception"]
    assert result.jobs["bug"].attempts == 1
    assert result.jobs["group"].error_kind == "connection" and result.jobs["group"].attempts == 2
    assert result.jobs["silent"].error_kind == "protocol"


def test_a_slow_subscriber_slows_the_batch_but_loses_nothing(recorder: Recorder) -> None:
    class Slow:
        def __init__(self) -> None:
            self.count = 0
            self.batches = 0

        async def deliver(self, batch: Sequence[Tagged]) -> None:
            self.count += len(batch)
            self.batches += 1
            await trio.sleep(1.0)

    slow = Slow()
    tokens = 10_000  # far more events than the bus holds, so producers must wait for the consumer
    spec = make_spec([f"q{i}" for i in range(5)], sim={"ttft": 0, "tokens_per_s": 0, "reply_tokens": tokens})
    fast = run_virtual(spec)
    slowed = run_virtual(spec, subscribers=[slow, recorder])
    # per job: queued, input, attempt, session, deltas, usage, finished, succeeded; plus the batch's two
    assert slow.count == len(recorder.events) == 5 * (tokens + 7) + 2
    assert slow.batches >= 4
    assert fast.summary.wall_s == 0.0
    assert slowed.summary.wall_s >= slow.batches - 2  # every delivery but the last ones held the batch up


def test_results_come_back_in_job_order_with_text() -> None:
    spec = make_spec(
        [
            {"id": f"j{i}", "prompt": "p", "sim": {"text": f"answer {i}", "ttft": 1.0 / (i + 1)}}
            for i in range(4)
        ]
    )
    result = run_virtual(spec)
    assert list(result.jobs) == ["j0", "j1", "j2", "j3"]
    assert [j.text for j in result.jobs.values()] == ["answer 0", "answer 1", "answer 2", "answer 3"]


def test_keep_text_false_keeps_no_text() -> None:
    result = run_virtual(make_spec(["p"]), keep_text=False)
    (job,) = result.jobs.values()
    assert job.ok and job.text is None and job.tokens.output > 0


def test_in_flight_count_by_job_is_consistent_with_events(recorder: Recorder) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(8)],
        concurrency=3,
        sim={"fault_rates": {"overload": 0.5}, "latency_jitter": 0.9},
    )
    run_virtual(spec, subscribers=[recorder])
    per_job = defaultdict(list)
    for t in recorder.events:
        if t.job_id:
            per_job[t.job_id].append(t)
    assert all(isinstance(events[-1].event, JobSucceeded | JobFailed) for events in per_job.values())
    assert max_in_flight(recorder.events) <= 3


@pytest.fixture
def second_sim() -> Any:
    register("sim-b", "orchestrator.backends.sim.backend")
    yield
    unregister("sim-b")


def test_a_backend_at_its_limit_does_not_hold_the_workers_of_another(
    second_sim: Any, recorder: Recorder
) -> None:
    slow = [{"id": f"slow{i}", "prompt": "p", "backend": "sim"} for i in range(8)]
    fast = [{"id": f"fast{i}", "prompt": "p", "backend": "sim-b"} for i in range(8)]
    spec = make_spec(
        slow + fast,
        concurrency=4,
        backends={"sim": {"concurrency": 1}},
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 2},
        **{"sim-b": {"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 2}},
    )
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.succeeded == 16
    first_fast = min(
        t.ts for t in recorder.events if t.job_id == "fast0" and isinstance(t.event, AttemptStarted)
    )
    assert first_fast == 0.0  # not after the slow backend's queue
    assert max_in_flight([t for t in recorder.events if (t.job_id or "").startswith("slow")]) == 1


def test_job_input_carries_the_request_row_and_metadata_into_the_log_and_result(tmp_path: Path) -> None:
    from orchestrator.events import JobInput
    from orchestrator.record.aggregate import Aggregator

    spec = make_spec([{"id": "a", "prompt": "p", "system": "s", "metadata": {"gold": "pos"}}])
    spec = attrs.evolve(
        spec, jobs=(attrs.evolve(spec.jobs[0], row={"text": "t", "n": 3}),), log=str(tmp_path / "l")
    )
    result = run_virtual(spec)
    assert dict(result.jobs["a"].row) == {"text": "t", "n": 3} and dict(result.jobs["a"].metadata) == {
        "gold": "pos"
    }
    logged = [r.tagged for r in read_log(tmp_path / "l") if r.tagged is not None]
    inputs = [t.event for t in logged if isinstance(t.event, JobInput)]
    assert inputs == [JobInput(row={"text": "t", "n": 3}, metadata={"gold": "pos"}, system="s", prompt="p")]
    folded = Aggregator()
    folded.apply_all(logged)
    assert folded.results["a"].row == {"text": "t", "n": 3}


def test_log_inputs_false_leaves_the_rendered_request_out(recorder: Recorder) -> None:
    from orchestrator.events import JobInput

    spec = make_spec([{"id": "a", "prompt": "secret", "metadata": {"k": 1}}, {"id": "b", "prompt": "x"}])
    run_virtual(attrs.evolve(spec, log_inputs=False), subscribers=[recorder])
    inputs = {t.job_id: t.event for t in recorder.events if isinstance(t.event, JobInput)}
    assert inputs == {"a": JobInput(row={}, metadata={"k": 1})}  # b has nothing left to say


@attrs.frozen
class _EndsAsCut(FakeBackendKind):
    """Ends its stream (returns, or raises) just as the watchdog cuts it: the cut is made in the
    stream, so the stream goes on to its end without another checkpoint."""

    name = "ends-as-cut"

    async def stream(self, job: Any, attempt: int, emit: Any) -> None:
        await emit(TextDelta("x"))
        if job.prompt == "plain":
            await emit(StreamFinished(stop_reason="end_turn"))
            return
        # What the watchdog does when an attempt's idle time runs out (IdleWatchdog._check).
        watch = watchdog._ATTEMPT.get()
        assert watch is not None
        watch.fired, watch.active = "idle", False
        watch.scope.cancel()
        if job.prompt == "raises":
            raise RetryableError("reset", kind=ErrorKind.CONNECTION)
        await emit(StreamFinished(stop_reason="end_turn"))


def test_a_stream_that_ends_as_the_watchdog_cuts_it_keeps_its_own_outcome(recorder: Recorder) -> None:
    register("ends-as-cut", _EndsAsCut())
    try:
        spec = make_spec(
            [
                {"id": "ends", "prompt": "ends"},
                {"id": "raises", "prompt": "raises"},
                {"id": "plain", "prompt": "plain"},
            ],
            backend="ends-as-cut",
            concurrency=1,  # one worker carries on after each cut
            retry={"max_attempts": 2, "base_delay": 0.1},
        )
        result = run_virtual(spec, subscribers=[recorder])
    finally:
        unregister("ends-as-cut")
    assert result.jobs["ends"].status == "succeeded" and result.jobs["ends"].attempts == 1
    raised = result.jobs["raises"]
    assert (raised.status, raised.error_kind, raised.attempts) == ("failed", "connection", 2)
    assert result.jobs["plain"].status == "succeeded"
    for job in ("ends", "raises", "plain"):
        events = recorder.of_job(job)
        assert [t.seq for t in events] == list(range(len(events)))
        assert [t.event.kind for t in events].count("retry_scheduled") == (job == "raises")
        assert isinstance(events[-1].event, TERMINAL_EVENTS)


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_an_events_time_is_to_the_microsecond(seconds: float) -> None:
    ts = runner.batch_time(seconds)
    assert round(ts, 6) == ts  # a whole number of microseconds, as the log writes it
    assert abs(ts - seconds) <= 0.5e-6 + 1e-9 * seconds  # the nearest one (within float error)
    assert abs(ts - round(seconds, 6)) <= 1e-6 + 1e-9 * seconds
