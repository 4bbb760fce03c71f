"""The library surface: run_batch, open_batch, Query."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator import ConfigError, Query, RetryPolicy, Timeouts, open_batch, run_batch
from orchestrator.config.jobfile import build_batch
from orchestrator.config.library import BatchKeywords, library_batch
from orchestrator.events import JobSucceeded, Tagged, TextDelta
from orchestrator.record.log import read_log
from tests.helpers import as_logged


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
    assert as_logged(logged) == as_logged(seen)  # the log joins runs of deltas into one line
    assert len(logged) < len(seen)


def test_run_batch_summary_as_in_the_readme() -> None:
    summary = run_batch(["a", "b"], backend="sim", options={"ttft": 0, "tokens_per_s": 0}).summary
    assert summary.jobs == summary.succeeded == 2 and summary.ok


def test_bad_queries_raise_config_error_listing_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        run_batch([{"prompt": 5}, {"id": "x"}, "ok"], backend="sim", concurrency=0)
    assert info.value.problems == [
        "run_batch(concurrency=...): must be >= 1, got 0",
        "run_batch(queries=...)[0].prompt: expected a string, got integer 5",
        "run_batch(queries=...)[1].prompt: required",
    ]


@pytest.mark.parametrize(
    "keywords, problem",
    [
        (
            {"retry": RetryPolicy(base_delay=10.0, max_delay=1.0)},
            "run_batch(retry=...): max_delay (1.0) is below base_delay (10.0)",
        ),
        (
            {"retry": {"base_delay": 10.0, "max_delay": 1.0}},
            "run_batch(retry=...): max_delay (1.0) is below base_delay (10.0)",
        ),
        ({"retry": RetryPolicy(max_attempts=0)}, "run_batch(retry=...).max_attempts: must be >= 1, got 0"),
        (
            {"retry": RetryPolicy(max_attempts=True)},  # type: ignore[arg-type]
            "run_batch(retry=...).max_attempts: expected an integer, got boolean true",
        ),
        (
            {"retry": {"max_attempt": 2}},
            "run_batch(retry=...).max_attempt: unknown key (did you mean 'max_attempts'?)",
        ),
        ({"retry": "often"}, 'run_batch(retry=...): expected a table, got string "often"'),
        ({"timeouts": Timeouts(idle=0)}, "run_batch(timeouts=...).idle: must be > 0, got 0"),
        (
            {"timeouts": Timeouts(attempt=float("nan"))},
            "run_batch(timeouts=...).attempt: expected a finite number, got nan",
        ),
        ({"temperature": 3}, "run_batch(temperature=...): must be <= 2, got 3.0"),
        (
            {"fsync": "sometimes"},
            'run_batch(fsync=...): string "sometimes" is not one of: always, terminal, never',
        ),
        ({"hard_cap": True}, "run_batch(hard_cap=...): needs a spend cap: max_cost_usd"),
        (
            {"options": {"tokens_per_s": False}},
            "run_batch(options=...).tokens_per_s: expected a number, got boolean false",
        ),
        (
            {"backend": "simm"},
            "run_batch(backend=...): unknown backend 'simm' (did you mean 'sim'?); known: ",
        ),
        (
            {"backend_settings": {"simm": {}}},
            "run_batch(backend_settings=...).simm: unknown backend (did you mean 'sim'?)",
        ),
        ({"max_token": 5}, "run_batch(max_token=...): unknown keyword (did you mean 'max_tokens'?)"),
    ],
)
def test_each_problem_names_the_argument(keywords: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_batch(["p"], **{"backend": "sim", **keywords})
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(problem)


@pytest.mark.parametrize(
    "query, problem",
    [
        (Query("p", max_tokens=0), "run_batch(queries=...)[1].max_tokens: must be >= 1, got 0"),
        (Query("p", temperature=-1.0), "run_batch(queries=...)[1].temperature: must be >= 0, got -1.0"),
        (Query(5), "run_batch(queries=...)[1].prompt: expected a string, got integer 5"),  # type: ignore[arg-type]
        (
            Query("p", options={"ttf": 0}),
            "run_batch(queries=...)[1].options.ttf: unknown key (did you mean 'ttft'?)",
        ),
        (Query("p", backend="nope"), "run_batch(queries=...)[1].backend: unknown backend 'nope'"),
        (
            {"prompt": "p", "retry": {"max_delay": 0.5}},
            "run_batch(queries=...)[1].retry: max_delay (0.5) is below base_delay (1.0)",
        ),
        (7, "run_batch(queries=...)[1]: expected a table"),
    ],
)
def test_a_bad_query_is_named_by_its_index(query: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_batch(["fine", query], backend="sim")
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(problem)


async def test_open_batch_names_itself_in_problems() -> None:
    with pytest.raises(ConfigError) as info:
        async with open_batch(["p"], backend="sim", retry=RetryPolicy(base_delay=10.0, max_delay=1.0)):
            pass  # pragma: no cover - never entered
    assert info.value.problems == ["open_batch(retry=...): max_delay (1.0) is below base_delay (10.0)"]


def test_typed_defaults_reach_every_job_unchanged_and_a_job_may_change_one_key() -> None:
    policy = RetryPolicy(max_attempts=2, base_delay=0.5, max_delay=2.0)
    timeouts = Timeouts(idle=7.0)
    spec = library_batch(
        "run_batch",
        ["a", Query("b"), {"prompt": "c", "retry": {"max_attempts": 5}}],
        {"backend": "sim", "retry": policy, "timeouts": timeouts},
    )
    a, b, c = spec.jobs
    assert a.retry is policy and b.retry is policy and a.timeouts is timeouts
    assert c.retry == RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=2.0)


def test_a_job_hashes_the_same_given_as_a_query_a_mapping_or_a_job_file_table() -> None:
    typed = library_batch(
        "run_batch",
        [Query("p", id="x", max_tokens=5, options={"ttft": 0.5})],
        {"backend": "sim", "model": "m", "seed": 3},
    )
    mapping = library_batch(
        "run_batch",
        [{"id": "x", "prompt": "p", "max_tokens": 5, "sim": {"ttft": 0.5}}],
        {"backend": "sim", "model": "m", "seed": 3},
    )
    table = build_batch(
        [{"id": "x", "prompt": "p", "max_tokens": 5, "sim": {"ttft": 0.5}}],
        {"backend": "sim", "model": "m", "seed": 3},
    )
    assert typed.jobs == mapping.jobs == table.jobs


def test_both_entry_points_take_one_keyword_set() -> None:
    run = inspect.signature(run_batch).parameters
    opened = inspect.signature(open_batch).parameters
    assert run["keywords"].annotation == opened["keywords"].annotation == "Unpack[BatchKeywords]"
    assert {"resume", "retry_failed", "keep_text", "retry", "max_cost_usd"} <= set(
        BatchKeywords.__optional_keys__
    )


def test_resume_skips_what_the_log_shows_done(tmp_path: Path) -> None:
    log = str(tmp_path / "r.jsonl")
    queries: list[Any] = ["a", "b", {"prompt": "c", "sim": {"faults": ["fatal"]}}]
    first = run_batch(queries, backend="sim", resume=log, options={"ttft": 0})
    again = run_batch(queries, backend="sim", resume=log, options={"ttft": 0})
    assert (first.summary.succeeded, first.summary.failed) == (2, 1)
    assert (again.summary.jobs, again.summary.already_done) == (1, 2)


async def test_open_batch_resumes_from_a_log_as_run_batch_does(tmp_path: Path, autojump_clock: Any) -> None:
    log = str(tmp_path / "r.jsonl")
    queries: list[Any] = ["a", "b", {"prompt": "c", "sim": {"faults": ["fatal"]}}]
    async with open_batch(queries, backend="sim", resume=log, options={"ttft": 0}) as batch:
        first = await batch.wait()
    async with open_batch(
        queries, backend="sim", resume=log, retry_failed=True, options={"ttft": 0}
    ) as batch:
        again = await batch.wait()
    assert (first.summary.succeeded, first.summary.failed) == (2, 1)
    assert (again.summary.jobs, again.summary.already_done) == (1, 2)
    assert [r.header is not None for r in read_log(log)].count(True) == 2  # appended, one header per run


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
