"""The ``openai`` backend end to end against the fake server, and its decoder alone."""

from __future__ import annotations

import pytest
import trio

from orchestrator.backends.http.decoders.openai import OpenAIDecoder
from orchestrator.backends.http.prices import OPENAI_PRICES
from orchestrator.errors import ConfigError, FatalError, RetryableError
from orchestrator.events import (
    AttemptStarted,
    RetryScheduled,
    SessionStarted,
    StreamFinished,
    StreamWarning,
    TextDelta,
    ThinkingDelta,
    Tokens,
    ToolCall,
)
from orchestrator.http import ServerSentEvent
from orchestrator.testing.openai.server import (
    Disconnect,
    ErrorMidStream,
    HttpError,
    Reply,
    Stall,
    Tool,
    open_fake_openai,
)
from tests.http_helpers import events_of, run_jobs

KEY = "sk-test-openai-0123456789"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def settings(fake: object, **more: object) -> dict[str, object]:
    return {"base_url": fake.base_url, **more}  # type: ignore[attr-defined]


async def test_a_reply_streams_as_text_deltas_with_usage_and_cost() -> None:
    async with open_fake_openai() as fake:
        fake.script(Reply("Hello, streaming world!", chunk_chars=4, prompt_tokens=1000, cached_tokens=400))
        result, recorder = await run_jobs(
            "openai",
            settings(fake),
            [
                {
                    "id": "j",
                    "prompt": "Say hi",
                    "system": "Be brief",
                    "max_tokens": 50,
                    "temperature": 0.5,
                    "seed": 7,
                }
            ],
            model="gpt-4o-mini",
        )
    job = result.jobs["j"]
    assert job.ok and job.text == "Hello, streaming world!" and job.stop_reason == "stop"
    assert [e.text for e in events_of(recorder, TextDelta)] == ["Hell", "o, s", "trea", "ming", " wor", "ld!"]
    assert events_of(recorder, SessionStarted)[0].model == "gpt-4o-mini"
    assert job.tokens == Tokens(input=600, output=6, cache_read=400)
    price = OPENAI_PRICES["gpt-4o-mini"]
    assert job.cost_usd == pytest.approx(
        (600 * price.input + 6 * price.output + 400 * price.cache_read) / 1e6
    )
    request = fake.requests[0]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Say hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 50,
        "temperature": 0.5,
        "seed": 7,
    }


async def test_tool_calls_split_over_many_deltas_arrive_whole() -> None:
    calls = (
        Tool("search", {"query": "trio nurseries", "limit": 3}, piece_chars=2),
        Tool("open", {"url": "x" * 40}),
    )
    async with open_fake_openai() as fake:
        fake.script(Reply("Let me look.", tool_calls=calls))
        options = {"tools": [{"type": "function", "function": {"name": "search"}}], "tool_choice": "auto"}
        result, _ = await run_jobs("openai", settings(fake), ["q"], model="gpt-4o", openai=options)
    job = next(iter(result.jobs.values()))
    assert [(c.call_id, c.name, dict(c.input)) for c in job.tool_calls] == [
        ("call_fake_0", "search", {"query": "trio nurseries", "limit": 3}),
        ("call_fake_1", "open", {"url": "x" * 40}),
    ]
    assert job.stop_reason == "tool_calls"
    assert fake.requests[0].body["tools"] == options["tools"]


@pytest.mark.parametrize("header", ["retry_after", "retry_after_ms"])
async def test_a_429_is_retried_no_sooner_than_retry_after(header: str) -> None:
    wait = {"retry_after": 0.3} if header == "retry_after" else {"retry_after_ms": 300}
    async with open_fake_openai() as fake:
        fake.script(HttpError(429, "Rate limit reached for requests", **wait), Reply("ok"))  # type: ignore[arg-type]
        result, recorder = await run_jobs("openai", settings(fake), ["q"], model="gpt-4o")
    (retry,) = events_of(recorder, RetryScheduled)
    assert retry.error_kind == "rate_limited" and retry.retry_after_s == pytest.approx(0.3)
    assert retry.delay_s >= 0.3 and "Rate limit reached" in retry.message
    assert result.summary.succeeded == 1


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (HttpError(500, "The server had an error"), "server_error"),
        (HttpError(503, "unavailable"), "server_error"),
        (ErrorMidStream(message="The server had an error while processing your request."), "server_error"),
        (Disconnect(partial="cut sho"), "connection"),
        (Stall(partial="first"), "timeout_idle"),
    ],
)
async def test_a_transient_failure_is_retried_then_succeeds(
    fault: object, kind: str, autojump_clock: trio.abc.Clock
) -> None:
    async with open_fake_openai() as fake:
        fake.script(fault, Reply("recovered"))  # type: ignore[arg-type]
        result, recorder = await run_jobs(
            "openai", settings(fake), ["q"], model="gpt-4o", timeouts={"idle": 0.3}
        )
    (retry,) = events_of(recorder, RetryScheduled)
    assert retry.error_kind == kind
    job = next(iter(result.jobs.values()))
    assert job.ok and job.text == "recovered" and job.attempts == 2


async def test_an_error_in_every_stream_fails_the_job_with_the_servers_message() -> None:
    async with open_fake_openai(default=ErrorMidStream(message="model crashed")) as fake:
        result, _ = await run_jobs(
            "openai", settings(fake), ["q"], model="gpt-4o", retry={"max_attempts": 2, "base_delay": 0}
        )
    job = next(iter(result.jobs.values()))
    assert job.status == "failed" and job.attempts == 2
    assert job.error == "error in stream: server_error: model crashed"


@pytest.mark.parametrize(
    ("fault", "kind", "message"),
    [
        (
            HttpError(400, "Invalid value for 'temperature'"),
            "bad_request",
            "HTTP 400 Bad Request: Invalid value",
        ),
        (HttpError(401, "Incorrect API key provided"), "auth", "HTTP 401 Unauthorized: Incorrect API key"),
        (HttpError(404, "The model `nope` does not exist"), "not_found", "does not exist"),
        (
            HttpError(
                400, "This model's maximum context length is 128000 tokens", code="context_length_exceeded"
            ),
            "context_length",
            "maximum context length",
        ),
    ],
)
async def test_a_request_the_server_refuses_fails_at_once(fault: HttpError, kind: str, message: str) -> None:
    async with open_fake_openai() as fake:
        fake.script(fault)
        result, _ = await run_jobs("openai", settings(fake), ["q"], model="gpt-4o")
    job = next(iter(result.jobs.values()))
    assert (job.status, job.error_kind, job.attempts) == ("failed", kind, 1)
    assert message in (job.error or "")


async def test_no_first_event_in_time_is_retried() -> None:
    async with open_fake_openai() as fake:
        fake.script(Stall(partial=None), Reply("late but fine"))
        result, recorder = await run_jobs(
            "openai", settings(fake, first_event_timeout=0.2), ["q"], model="gpt-4o"
        )
    assert [r.error_kind for r in events_of(recorder, RetryScheduled)] == ["timeout_first_event"]
    assert result.summary.succeeded == 1


async def test_a_compatible_server_without_usage_or_done_still_answers_with_unknown_cost() -> None:
    async with open_fake_openai() as fake:
        fake.script(Reply("local answer", usage=False, done=False, reasoning="thinking..."))
        result, recorder = await run_jobs(
            "openai", settings(fake, api_key_required=False, include_usage=False), ["q"], model="llama3"
        )
    job = next(iter(result.jobs.values()))
    assert job.ok and job.text == "local answer"
    assert [e.text for e in events_of(recorder, ThinkingDelta)] == ["thinking..."]
    assert events_of(recorder, StreamFinished)[0].cost_usd is None
    assert "no usage" in events_of(recorder, StreamWarning)[0].message
    assert "stream_options" not in fake.requests[0].body


async def test_an_unpriced_model_has_an_unknown_cost_and_a_user_price_fixes_it() -> None:
    async with open_fake_openai(default=Reply("x")) as fake:
        result, recorder = await run_jobs("openai", settings(fake), ["q"], model="llama3")
        assert result.summary.cost_unknown_jobs == 1
        assert "no price for model 'llama3'" in events_of(recorder, StreamWarning)[0].message
        priced = settings(fake, prices={"llama3": {"input": 1.0, "output": 2.0}})
        result, _ = await run_jobs("openai", priced, ["q"], model="llama3")
    assert result.summary.cost_unknown_jobs == 0
    assert result.summary.cost_usd == pytest.approx((10 * 1.0 + 1 * 2.0) / 1e6)


def test_a_missing_key_stops_the_batch_before_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.api import run_batch

    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="environment variable OPENAI_API_KEY is not set"):
        run_batch(["q"], backend="openai", model="gpt-4o")
    with pytest.raises(ConfigError, match="environment variable MY_KEY is not set"):
        run_batch(
            ["q"], backend="openai", model="gpt-4o", backend_settings={"openai": {"api_key_env": "MY_KEY"}}
        )
    monkeypatch.setenv("MY_KEY", KEY)
    with pytest.raises(ConfigError, match=r"jobs without a model \(p-"):
        run_batch(["q"], backend="openai", backend_settings={"openai": {"api_key_env": "MY_KEY"}})


# --- the decoder alone ------------------------------------------------------------------------------


def decoder() -> OpenAIDecoder:
    return OpenAIDecoder("gpt-4o", OPENAI_PRICES, lambda text: text)


def sse(data: str) -> ServerSentEvent:
    return ServerSentEvent(data)


def test_tool_call_pieces_are_joined_by_index_even_interleaved() -> None:
    d = decoder()
    chunks = [
        '{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"b","function":{"name":"two","arguments":"{\\"y"}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"one","arguments":"{}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\\": 2}"}}]},"finish_reason":"tool_calls"}]}',  # noqa: E501
    ]
    for chunk in chunks:
        d.feed(sse(chunk))
    final = d.feed(sse("[DONE]"))
    calls = [e for e in final if isinstance(e, ToolCall)]
    assert [(c.call_id, c.name, dict(c.input)) for c in calls] == [("a", "one", {}), ("b", "two", {"y": 2})]


def test_bad_tool_arguments_are_kept_as_text_with_a_warning() -> None:
    d = decoder()
    d.feed(
        sse(
            '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{oops"}}]},"finish_reason":"tool_calls"}]}'
        )
    )
    final = d.feed(sse("[DONE]"))
    assert [e.input for e in final if isinstance(e, ToolCall)] == [{"_raw": "{oops"}]
    assert any(isinstance(e, StreamWarning) for e in final)


def test_a_stream_cut_before_finish_is_retryable_and_errors_in_stream_are_classified() -> None:
    d = decoder()
    d.feed(sse('{"choices":[{"delta":{"content":"half"}}]}'))
    with pytest.raises(RetryableError, match="before the reply was complete"):
        d.finish()
    with pytest.raises(FatalError, match="context"):
        decoder().feed(
            sse('{"error":{"message":"maximum context length exceeded","type":"invalid_request_error"}}')
        )
    with pytest.raises(FatalError):
        decoder().feed(sse('{"object":"error","message":"bad","type":"BadRequestError","code":400}'))
    with pytest.raises(RetryableError):
        decoder().feed(sse('{"object":"error","message":"oops","type":"InternalServerError","code":500}'))


async def test_the_spend_cap_reserves_each_attempts_worst_case_at_the_models_price() -> None:
    price = OPENAI_PRICES["gpt-4o-mini"]
    prompt = "x" * 400  # about 101 tokens by the backend's estimate
    worst = (101 * price.input + 200 * price.output) / 1e6  # the prompt and the whole reply budget
    async with open_fake_openai() as fake:
        fake.default = Reply("short", prompt_tokens=101)
        result, recorder = await run_jobs(
            "openai",
            settings(fake),
            [{"id": f"j{i}", "prompt": prompt} for i in range(6)],
            model="gpt-4o-mini",
            max_tokens=200,
            concurrency=4,
            max_cost_usd=worst * 1.5,
            dedupe=False,  # six identical requests, each reserved and paid for
        )
    # Each attempt reserves its worst case: a second one at once would pass the cap, so the batch
    # stops there (without the estimate nothing would be reserved and all six would run).
    summary = result.summary
    assert summary.stopped == "spend cap" and summary.skipped >= 1 and summary.cost_usd <= worst * 1.5
    assert len([t for t in recorder.events if isinstance(t.event, AttemptStarted)]) < 6
