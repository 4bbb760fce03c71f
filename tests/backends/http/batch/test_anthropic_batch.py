"""``anthropic-batch`` end to end against the fake Message Batches API, on the virtual clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from orchestrator.events import (
    BatchProgress,
    BatchSubmitted,
    JobFailed,
    RetryScheduled,
    StreamFinished,
    TextDelta,
    ToolCall,
)
from orchestrator.testing.anthropic.batches import (
    Errored,
    Expired,
    anthropic_batch_store,
    open_fake_anthropic_batches,
)
from orchestrator.testing.anthropic.server import Reply, Text, Thinking, ToolUse, Usage, open_fake_anthropic
from tests.http_helpers import events_of, run_jobs

KEY = "sk-ant-test-0123456789"
MODEL = "claude-sonnet-4-5"
FAST = {"batch_linger": 1.0, "poll_min": 1.0, "poll_max": 8.0}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def replies() -> dict[str, Reply]:
    return {
        "plain": Reply.text("Paris is the capital.", usage=Usage(input_tokens=12, output_tokens=6)),
        "tool": Reply(
            (
                Thinking("check the weather"),
                Text("Checking."),
                ToolUse("get_weather", {"city": "Oslo"}, id="toolu_7"),
            ),
            usage=Usage(input_tokens=30, output_tokens=20, cache_read_input_tokens=100),
        ),
    }


def comparable(result: Any, recorder: Any) -> dict[str, Any]:
    """What a job's result and stream say, without ids and cost."""
    jobs = {
        job_id: (job.ok, job.text, job.stop_reason, job.tokens, job.attempts)
        for job_id, job in result.jobs.items()
    }
    calls = [(c.name, dict(c.input)) for c in events_of(recorder, ToolCall)]
    return {"jobs": jobs, "calls": calls}


async def test_a_batch_gives_what_the_streaming_fake_gives_at_half_the_cost(
    autojump_clock: trio.abc.Clock,
) -> None:
    jobs = [{"id": name, "prompt": f"question {name}"} for name in replies()]
    async with open_fake_anthropic() as streaming:
        streaming.default = lambda request: replies()["tool" if "tool" in request.prompt() else "plain"]
        streamed, streamed_events = await run_jobs(
            "anthropic", {"base_url": streaming.base_url}, jobs, model=MODEL
        )
    async with open_fake_anthropic_batches() as fake:
        for name, reply in replies().items():
            fake.store.script(name, reply)
        batched, batched_events = await run_jobs(
            "anthropic-batch", {"base_url": fake.base_url, **FAST}, jobs, model=MODEL, concurrency=100
        )
    assert comparable(batched, batched_events) == comparable(streamed, streamed_events)
    assert comparable(batched, batched_events)["calls"] == [("get_weather", {"city": "Oslo"})]
    assert batched.jobs["tool"].tokens.cache_read == 100 and batched.jobs["tool"].stop_reason == "tool_use"
    for name in replies():
        assert batched.jobs[name].cost_usd == pytest.approx(streamed.jobs[name].cost_usd / 2)
    assert dict(fake.store.submissions) == {"plain": 1, "tool": 1}
    (submitted,) = events_of(batched_events, BatchSubmitted)
    assert submitted.backend == "anthropic-batch" and sorted(submitted.custom_ids) == ["plain", "tool"]
    assert events_of(batched_events, BatchProgress)[-1].counts["succeeded"] == 2
    # the whole text of a block in one delta
    assert [e.text for e in events_of(batched_events, TextDelta)].count("Paris is the capital.") == 1


async def test_a_request_that_errors_is_resubmitted_in_a_later_batch(autojump_clock: trio.abc.Clock) -> None:
    async with open_fake_anthropic_batches() as fake:
        fake.store.script("a", Errored(529, "overloaded_error", "Overloaded"), Reply.text("second time"))
        result, recorder = await run_jobs(
            "anthropic-batch",
            {"base_url": fake.base_url, **FAST},
            [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}],
            model=MODEL,
            concurrency=100,
        )
    assert result.jobs["a"].ok and result.jobs["a"].text == "second time" and result.jobs["a"].attempts == 2
    assert result.jobs["b"].text == "Echo: y" and result.jobs["b"].attempts == 1
    (retry,) = events_of(recorder, RetryScheduled)
    assert retry.error_kind == "overloaded"
    assert fake.store.submissions == {"a": 2, "b": 1}
    assert len(fake.store.batches) == 2


async def test_an_expired_request_is_retried_and_a_bad_one_fails(autojump_clock: trio.abc.Clock) -> None:
    async with open_fake_anthropic_batches() as fake:
        fake.store.script("late", Expired(), Reply.text("on time"))
        fake.store.script("bad", Errored(400, "invalid_request_error", "max_tokens: too large"))
        result, recorder = await run_jobs(
            "anthropic-batch",
            {"base_url": fake.base_url, **FAST},
            [{"id": "late", "prompt": "x"}, {"id": "bad", "prompt": "y"}],
            model=MODEL,
            concurrency=100,
        )
    assert result.jobs["late"].text == "on time"
    assert [r.error_kind for r in events_of(recorder, RetryScheduled)] == ["expired"]
    (failed,) = events_of(recorder, JobFailed)
    assert failed.error_kind == "bad_request" and "max_tokens: too large" in failed.message
    assert fake.store.submissions == {"late": 2, "bad": 1}


async def test_jobs_go_in_chunks_of_batch_requests(autojump_clock: trio.abc.Clock) -> None:
    async with open_fake_anthropic_batches() as fake:
        result, recorder = await run_jobs(
            "anthropic-batch",
            {"base_url": fake.base_url, **FAST, "batch_requests": 4},
            [f"q{n}" for n in range(10)],
            model=MODEL,
            concurrency=100,
        )
    assert result.summary.succeeded == 10
    assert sorted(len(b.requests) for b in fake.store.batches.values()) == [2, 4, 4]
    assert sorted(len(e.custom_ids) for e in events_of(recorder, BatchSubmitted)) == [2, 4, 4]
    assert len(events_of(recorder, StreamFinished)) == 10


async def test_polling_survives_a_restart_of_the_api_mid_batch(autojump_clock: trio.abc.Clock) -> None:
    store = anthropic_batch_store(processing=600)
    async with trio.open_nursery() as nursery:
        async with open_fake_anthropic_batches(store) as fake:
            port = fake.port
            outcome: dict[str, Any] = {}
            finished = trio.Event()

            async def run() -> None:
                outcome["result"] = await run_jobs(
                    "anthropic-batch",
                    {"base_url": fake.base_url, **FAST},
                    [{"id": "a", "prompt": "x"}],
                    model=MODEL,
                    concurrency=100,
                )
                finished.set()

            nursery.start_soon(run)
            while not store.batches:  # noqa: ASYNC110  (the fake announces no created batch)
                await trio.sleep(0.5)
        await trio.sleep(60)  # the API is down: polls fail to connect
        down = len(store.requests)
        async with open_fake_anthropic_batches(store, port=port):
            await finished.wait()
    assert len(store.requests) > down  # polled again after the restart
    result, _ = outcome["result"]
    assert result.jobs["a"].text == "Echo: x" and result.jobs["a"].attempts == 1
    assert store.submissions == {"a": 1}


async def test_a_result_later_than_the_idle_and_attempt_timeouts_still_arrives(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = anthropic_batch_store(processing=3 * 3600)
    async with open_fake_anthropic_batches(store) as fake:
        result, _ = await run_jobs(
            "anthropic-batch",
            {"base_url": fake.base_url, **FAST, "poll_max": 600},
            [{"id": "slow", "prompt": "x"}],
            model=MODEL,
            concurrency=100,
            timeouts={"idle": 60, "attempt": 600, "job": 5 * 3600},
        )
    assert result.jobs["slow"].ok and result.jobs["slow"].attempts == 1
    assert trio.current_time() >= 3 * 3600


async def test_the_job_timeout_still_ends_a_batch_attempt(autojump_clock: trio.abc.Clock) -> None:
    store = anthropic_batch_store(processing=3 * 3600)
    async with open_fake_anthropic_batches(store) as fake:
        result, recorder = await run_jobs(
            "anthropic-batch",
            {"base_url": fake.base_url, **FAST, "poll_max": 600},
            [{"id": "slow", "prompt": "x"}],
            model=MODEL,
            concurrency=100,
            timeouts={"job": 3600},
        )
    assert not result.jobs["slow"].ok
    (failed,) = events_of(recorder, JobFailed)
    assert failed.error_kind == "timeout_job"
