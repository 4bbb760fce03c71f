"""The library surface: run_batch, open_batch, Query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator import ConfigError, Query, RetryPolicy, open_batch, run_batch
from orchestrator.events import JobSucceeded, Tagged, TextDelta
from orchestrator.record.log import read_log


def test_run_batch_takes_strings_and_queries_and_returns_results_in_order(tmp_path: Path) -> None:
    seen: list[Tagged] = []
    log = tmp_path / "lib.jsonl"
    result = run_batch(
        ["first", Query("second", id="two", options={"text": "fixed reply", "ttft": 0})],
        backend="sim",
        options={"ttft": 0, "tokens_per_s": 0},
        retry=RetryPolicy(max_attempts=2),
        on_event=seen.append,
        log=str(log),
    )
    assert result.ok and list(result.jobs)[1] == "two"
    assert result.jobs["two"].text == "fixed reply"
    assert [t for t in seen if isinstance(t.event, JobSucceeded)] != []
    logged = [r.tagged for r in read_log(log) if r.tagged is not None]
    assert logged == seen


def test_run_batch_summary_as_in_the_readme() -> None:
    summary = run_batch(["a", "b"], backend="sim", options={"ttft": 0, "tokens_per_s": 0}).summary
    assert summary.jobs == summary.succeeded == 2 and summary.ok


def test_bad_queries_raise_config_error_listing_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        run_batch([{"prompt": 5}, {"id": "x"}, "ok"], backend="sim", concurrency=0)
    assert info.value.problems == [
        "defaults.concurrency: must be >= 1, got 0",
        "queries[0].prompt: expected a string, got integer 5",
        "queries[1].prompt: required",
    ]


def test_resume_skips_what_the_log_shows_done(tmp_path: Path) -> None:
    log = str(tmp_path / "r.jsonl")
    queries: list[Any] = ["a", "b", {"prompt": "c", "sim": {"faults": ["fatal"]}}]
    first = run_batch(queries, backend="sim", resume=log, options={"ttft": 0})
    again = run_batch(queries, backend="sim", resume=log, options={"ttft": 0})
    assert (first.summary.succeeded, first.summary.failed) == (2, 1)
    assert (again.summary.jobs, again.summary.already_done) == (1, 2)


async def test_open_batch_yields_events_as_they_happen(autojump_clock: Any) -> None:
    texts: dict[str, str] = {}
    async with open_batch(["x", "y"], backend="sim", options={"text": "hello there"}) as batch:
        async for tagged in batch:
            if isinstance(tagged.event, TextDelta):
                texts[tagged.job_id] = texts.get(tagged.job_id, "") + tagged.event.text  # type: ignore[index]
    assert batch.result is not None and batch.result.ok
    assert sorted(texts.values()) == ["hello there", "hello there"]


async def test_open_batch_cancel_stops_gracefully(autojump_clock: Any) -> None:
    async with open_batch(
        [f"q{i}" for i in range(5)], backend="sim", concurrency=1, options={"tokens_per_s": 1}
    ) as batch:
        async for tagged in batch:
            if isinstance(tagged.event, TextDelta):
                batch.cancel()
    assert batch.result is not None
    summary = batch.result.summary
    assert summary.stopped == "cancelled" and summary.cancelled == 1 and summary.skipped == 4


async def test_open_batch_without_reading_still_finishes(autojump_clock: Any) -> None:
    async with open_batch(
        [f"q{i}" for i in range(50)], backend="sim", buffer=4, options={"tokens_per_s": 0}
    ) as batch:
        result = await batch.wait()
    assert result.summary.succeeded == 50


async def test_cancelling_the_surrounding_scope_tears_the_batch_down(autojump_clock: Any) -> None:
    with trio.move_on_after(1.0) as scope:
        async with open_batch(["slow"], backend="sim", options={"tokens_per_s": 0.5}) as batch:
            await batch.wait()
    assert scope.cancelled_caught


def test_progress_cost_matches_the_summary_including_failed_attempts() -> None:
    from orchestrator.cli.display import Progress
    from orchestrator.events import AttemptStarted, JobFailed, StreamFinished, Tokens, UsageReported

    def tag(seq: int, attempt: int, event: object) -> Tagged:
        return Tagged("j", attempt, seq, float(seq), event)  # type: ignore[arg-type]

    progress = Progress()
    events = [
        tag(0, 1, AttemptStarted(backend="x")),
        tag(1, 1, UsageReported(Tokens(output=3), cost_usd=0.25)),
        tag(2, 1, StreamFinished(cost_usd=0.5)),  # the stream's total replaces the usage cost
        tag(3, 2, AttemptStarted(backend="x")),
        tag(4, 2, UsageReported(Tokens(output=1), cost_usd=0.125)),
        tag(5, 2, JobFailed("max_turns", "m", False, 2)),  # failed: charged its usage cost
    ]
    trio.run(progress.deliver, events)
    assert progress.cost == 0.625
