"""``openai-batch`` end to end against the fake Batch API, on the virtual clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from orchestrator.events import BatchProgress, BatchSubmitted, JobFailed, RetryScheduled, ToolCall
from orchestrator.testing.openai.batches import Errored, Expired, open_fake_openai_batches
from orchestrator.testing.openai.script import Reply, Tool
from orchestrator.testing.openai.server import open_fake_openai
from tests.http_helpers import events_of, run_jobs

KEY = "sk-test-openai-0123456789"
MODEL = "gpt-4o-mini"
FAST = {"batch_linger": 1.0, "poll_min": 1.0, "poll_max": 8.0}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def replies() -> dict[str, Reply]:
    return {
        "plain": Reply(text="Paris is the capital.", prompt_tokens=12, completion_tokens=6),
        "tool": Reply(
            text="Checking.",
            reasoning="think first",
            tool_calls=(Tool("get_weather", {"city": "Oslo"}, id="call_7"),),
            prompt_tokens=30,
            cached_tokens=10,
            completion_tokens=20,
        ),
    }


def comparable(result: Any, recorder: Any) -> dict[str, Any]:
    jobs = {
        job_id: (job.ok, job.text, job.stop_reason, job.tokens, job.attempts)
        for job_id, job in result.jobs.items()
    }
    calls = [(c.call_id, c.name, dict(c.input)) for c in events_of(recorder, ToolCall)]
    return {"jobs": jobs, "calls": calls}


async def test_a_batch_gives_what_the_streaming_fake_gives_at_half_the_cost(
    autojump_clock: trio.abc.Clock,
) -> None:
    jobs = [{"id": name, "prompt": f"question {name}"} for name in replies()]
    async with open_fake_openai() as streaming:
        streaming.default = lambda request: replies()["tool" if "tool" in request.prompt else "plain"]
        streamed, streamed_events = await run_jobs(
            "openai", {"base_url": streaming.base_url}, jobs, model=MODEL
        )
    async with open_fake_openai_batches() as fake:
        for name, reply in replies().items():
            fake.store.script(name, reply)
        batched, batched_events = await run_jobs(
            "openai-batch", {"base_url": fake.base_url, **FAST}, jobs, model=MODEL, concurrency=100
        )
    assert comparable(batched, batched_events) == comparable(streamed, streamed_events)
    assert comparable(batched, batched_events)["calls"] == [("call_7", "get_weather", {"city": "Oslo"})]
    assert streamed.jobs["tool"].tokens.cache_read == 10  # the comparison covers cached tokens
    assert (
        batched.jobs["tool"].stop_reason == "tool_calls"
        and batched.jobs["plain"].text == "Paris is the capital."
    )
    for name in replies():
        assert batched.jobs[name].cost_usd == pytest.approx(streamed.jobs[name].cost_usd / 2)
    assert fake.store.submissions == {"plain": 1, "tool": 1}
    assert [path for method, path in fake.store.requests if method == "POST"] == ["/v1/files", "/v1/batches"]
    (submitted,) = events_of(batched_events, BatchSubmitted)
    assert sorted(submitted.custom_ids) == ["plain", "tool"]
    assert events_of(batched_events, BatchProgress)[-1].counts["completed"] == 2


async def test_a_request_that_errors_is_resubmitted_and_an_expired_one_too(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_fake_openai_batches() as fake:
        fake.store.script(
            "a", Errored(500, "server_error", "The server had an error"), Reply(text="second time")
        )
        fake.store.script("late", Expired(), Reply(text="on time"))
        fake.store.script("bad", Errored(400, "invalid_request_error", "Unsupported parameter: 'top_k'"))
        result, recorder = await run_jobs(
            "openai-batch",
            {"base_url": fake.base_url, **FAST},
            [{"id": "a", "prompt": "x"}, {"id": "late", "prompt": "y"}, {"id": "bad", "prompt": "z"}],
            model=MODEL,
            concurrency=100,
        )
    assert result.jobs["a"].text == "second time" and result.jobs["late"].text == "on time"
    assert sorted(r.error_kind for r in events_of(recorder, RetryScheduled)) == ["expired", "server_error"]
    (failed,) = events_of(recorder, JobFailed)
    assert failed.error_kind == "bad_request" and "top_k" in failed.message
    assert fake.store.submissions == {"a": 2, "late": 2, "bad": 1}


async def test_jobs_go_in_chunks_of_batch_requests(autojump_clock: trio.abc.Clock) -> None:
    async with open_fake_openai_batches() as fake:
        result, _ = await run_jobs(
            "openai-batch",
            {"base_url": fake.base_url, **FAST, "batch_requests": 3},
            [f"q{n}" for n in range(7)],
            model=MODEL,
            concurrency=100,
        )
    assert result.summary.succeeded == 7
    assert sorted(len(b.requests) for b in fake.store.batches.values()) == [1, 3, 3]
