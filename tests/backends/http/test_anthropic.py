"""The ``anthropic`` backend end to end against the fake Messages API, and its decoder alone."""

from __future__ import annotations

import pytest
import trio

from orchestrator.backends.http.decoders.anthropic import AnthropicDecoder
from orchestrator.backends.http.prices import ANTHROPIC_PRICES, cost_usd
from orchestrator.errors import FatalError, RetryableError
from orchestrator.events import (
    AssistantMessage,
    RetryScheduled,
    SessionStarted,
    StreamFinished,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    Tokens,
    ToolCall,
    ToolUseBlock,
)
from orchestrator.http import ServerSentEvent
from orchestrator.testing.anthropic.server import (
    Disconnect,
    ErrorMidStream,
    HttpError,
    Reply,
    Stall,
    Text,
    Thinking,
    ToolUse,
    Usage,
    open_fake_anthropic,
)
from tests.http_helpers import events_of, run_jobs

KEY = "sk-ant-test-0123456789"
MODEL = "claude-sonnet-4-5"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def settings(fake: object, **more: object) -> dict[str, object]:
    return {"base_url": fake.base_url, **more}  # type: ignore[attr-defined]


async def test_text_thinking_and_a_tool_call_stream_with_cache_usage_and_cost() -> None:
    reply = Reply(
        (
            Thinking("Let me think about the weather.", chunk_chars=8),
            Text("I will check.", chunks=("I will", " check.")),
            ToolUse("get_weather", {"city": "Paris", "days": [1, 2, 3], "units": "metric"}, id="toolu_1"),
        ),
        usage=Usage(
            input_tokens=50, output_tokens=30, cache_read_input_tokens=1000, cache_creation_input_tokens=200
        ),
    )
    async with open_fake_anthropic() as fake:
        fake.script(reply)
        tools = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}]
        result, recorder = await run_jobs(
            "anthropic",
            settings(fake),
            [{"id": "j", "prompt": "Weather?", "system": "Be brief", "temperature": 0.2, "max_tokens": 3000}],
            model=MODEL,
            anthropic={"tools": tools, "stop_sequences": ["END"], "thinking_budget": 1024},
        )
    job = result.jobs["j"]
    assert job.ok and job.text == "I will check." and job.stop_reason == "tool_use"
    assert [e.text for e in events_of(recorder, TextDelta)] == ["I will", " check."]
    assert "".join(e.text for e in events_of(recorder, ThinkingDelta)) == "Let me think about the weather."
    assert events_of(recorder, ToolCall) == [
        ToolCall("toolu_1", "get_weather", {"city": "Paris", "days": [1, 2, 3], "units": "metric"})
    ]
    (message,) = events_of(recorder, AssistantMessage)
    assert [type(b) for b in message.content] == [ThinkingBlock, TextBlock, ToolUseBlock]
    assert events_of(recorder, SessionStarted)[0].model == MODEL
    tokens = Tokens(input=50, output=30, cache_read=1000, cache_creation=200)
    assert job.tokens == tokens
    assert job.cost_usd == pytest.approx(cost_usd(ANTHROPIC_PRICES[MODEL], tokens))
    (request,) = fake.message_requests()
    assert request.headers["x-api-key"] == KEY and request.headers["anthropic-version"] == "2023-06-01"
    assert request.body == {
        "model": MODEL,
        "max_tokens": 3000,
        "messages": [{"role": "user", "content": "Weather?"}],
        "stream": True,
        "system": "Be brief",
        "temperature": 0.2,
        "tools": tools,
        "stop_sequences": ["END"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }


async def test_a_reply_split_inside_characters_decodes_whole() -> None:
    text = "caf\u00e9 \u2603 \U0001f600 " * 10
    async with open_fake_anthropic() as fake:
        fake.script(Reply((Text(text, chunk_chars=5),), write_size=7))
        result, _ = await run_jobs("anthropic", settings(fake), ["q"], model=MODEL)
    assert next(iter(result.jobs.values())).text == text


async def test_a_429_is_retried_no_sooner_than_retry_after() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(
            HttpError(429, "Number of request tokens has exceeded your rate limit", retry_after=0.3),
            Reply.text("ok"),
        )
        result, recorder = await run_jobs("anthropic", settings(fake), ["q"], model=MODEL)
    (retry,) = events_of(recorder, RetryScheduled)
    assert (retry.error_kind, retry.retry_after_s) == ("rate_limited", 0.3)
    assert retry.delay_s >= 0.3 and "exceeded your rate limit" in retry.message
    assert result.summary.succeeded == 1


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (HttpError(529, "Overloaded"), "overloaded"),
        (HttpError(500, "Internal server error"), "server_error"),
        (ErrorMidStream(error_type="overloaded_error", message="Overloaded"), "overloaded"),
        (ErrorMidStream(error_type="api_error", message="Internal server error"), "server_error"),
        (Disconnect(partial="cut"), "connection"),
        (Stall(partial="first words"), "timeout_idle"),
    ],
)
async def test_a_transient_failure_is_retried_then_succeeds(
    fault: object, kind: str, autojump_clock: trio.abc.Clock
) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(fault, Reply.text("recovered"))  # type: ignore[arg-type]
        result, recorder = await run_jobs(
            "anthropic", settings(fake), ["q"], model=MODEL, timeouts={"idle": 0.3}
        )
    (retry,) = events_of(recorder, RetryScheduled)
    assert retry.error_kind == kind
    job = next(iter(result.jobs.values()))
    assert job.ok and job.text == "recovered" and job.attempts == 2


@pytest.mark.parametrize(
    ("fault", "kind", "message"),
    [
        (
            HttpError(400, "max_tokens: Field required"),
            "bad_request",
            "HTTP 400 Bad Request: max_tokens: Field required",
        ),
        (HttpError(401, "invalid x-api-key"), "auth", "HTTP 401 Unauthorized: invalid x-api-key"),
        (HttpError(403, "not allowed"), "permission", "not allowed"),
        (HttpError(404, "model: nope"), "not_found", "model: nope"),
        (
            HttpError(413, "Request exceeds the maximum allowed number of bytes"),
            "too_large",
            "maximum allowed",
        ),
        (
            HttpError(400, "prompt is too long: 210000 tokens > 200000 maximum"),
            "context_length",
            "prompt is too long",
        ),
        (ErrorMidStream(error_type="invalid_request_error", message="bad input"), "bad_request", "bad input"),
    ],
)
async def test_a_request_the_server_refuses_fails_at_once_with_its_message(
    fault: object, kind: str, message: str
) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(fault)  # type: ignore[arg-type]
        result, _ = await run_jobs("anthropic", settings(fake), ["q"], model=MODEL)
    job = next(iter(result.jobs.values()))
    assert (job.status, job.error_kind, job.attempts) == ("failed", kind, 1)
    assert message in (job.error or "")


async def test_every_attempt_overloaded_fails_the_job_after_its_attempts() -> None:
    async with open_fake_anthropic(default=HttpError(529, "Overloaded")) as fake:
        result, _ = await run_jobs(
            "anthropic", settings(fake), ["q"], model=MODEL, retry={"max_attempts": 3, "base_delay": 0}
        )
    job = next(iter(result.jobs.values()))
    assert (job.status, job.error_kind, job.attempts) == ("failed", "overloaded", 3)
    assert (job.error or "").startswith("HTTP 529 Overloaded: Overloaded (request id req_")


async def test_many_jobs_share_the_backend_over_connections_the_server_closes() -> None:
    async with open_fake_anthropic(default=Reply.text("same")) as fake:
        result, _ = await run_jobs("anthropic", settings(fake), [f"q{i}" for i in range(40)], model=MODEL)
    assert result.summary.succeeded == 40 and len(fake.message_requests()) == 40


# --- the decoder alone ------------------------------------------------------------------------------


def feed_all(lines: list[tuple[str, str]]) -> list[object]:
    decoder = AnthropicDecoder(MODEL, ANTHROPIC_PRICES, lambda text: text)
    out: list[object] = []
    for name, data in lines:
        out.extend(decoder.feed(ServerSentEvent(data, name)))
    return out


def test_unknown_events_and_deltas_and_pings_are_ignored() -> None:
    events = feed_all(
        [
            (
                "message_start",
                '{"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":3}}}',
            ),
            ("ping", '{"type":"ping"}'),
            ("brand_new", '{"type":"brand_new","x":1}'),
            (
                "content_block_start",
                '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
            ),
            (
                "content_block_delta",
                '{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta"}}',
            ),
            (
                "content_block_delta",
                '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}',
            ),
            ("content_block_stop", '{"type":"content_block_stop","index":0}'),
            (
                "message_delta",
                '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}',
            ),
            ("message_stop", '{"type":"message_stop"}'),
        ]
    )
    assert [type(e).__name__ for e in events] == [
        "SessionStarted", "TextDelta", "AssistantMessage", "UsageReported", "StreamWarning", "StreamFinished"
    ]  # fmt: skip
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.cost_usd is None  # model "x" has no price


def test_a_stream_cut_before_message_stop_is_retryable_and_error_events_are_classified() -> None:
    decoder = AnthropicDecoder(MODEL, ANTHROPIC_PRICES, lambda text: text)
    with pytest.raises(RetryableError, match="before message_stop"):
        decoder.finish()
    with pytest.raises(RetryableError) as caught:
        feed_all([("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')])
    assert caught.value.kind == "overloaded"
    with pytest.raises(FatalError):
        feed_all([("error", '{"type":"error","error":{"type":"invalid_request_error","message":"no"}}')])


async def test_cache_system_and_a_shared_message_prefix_carry_cache_control() -> None:
    usage = Usage(input_tokens=5, output_tokens=2, cache_read_input_tokens=900)
    history = [{"role": "user", "content": "Long shared document"}, {"role": "assistant", "content": "Read."}]
    async with open_fake_anthropic() as fake:
        fake.script(Reply((Text("pos"),), usage=usage))
        result, _ = await run_jobs(
            "anthropic",
            settings(fake),
            [{"id": "j", "prompt": "Classify: good", "messages": history}],
            model=MODEL,
            system="Long shared instructions",
            anthropic={"cache_system": True, "cache_messages": 2},
        )
    assert result.jobs["j"].tokens.cache_read == 900
    (request,) = fake.message_requests()
    assert request.body["system"] == [
        {"type": "text", "text": "Long shared instructions", "cache_control": {"type": "ephemeral"}}
    ]
    assert request.body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Read.", "cache_control": {"type": "ephemeral"}}],
    }
    assert request.cache_breakpoints() == ["system[0]", "messages[1].content[0]"]


def test_the_fake_refuses_cache_control_the_api_would_refuse() -> None:
    from orchestrator.testing.anthropic.script import cache_problem

    block = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    assert cache_problem({"system": [block], "messages": [{"role": "user", "content": [block]}]}) is None
    assert cache_problem({"system": [{**block, "cache_control": {"type": "forever"}}]}) == (
        "system[0].cache_control: expected {'type': 'ephemeral'}"
    )
    assert cache_problem({"system": ["plain"]}) == "system.0: expected a text block"
    five = {"messages": [{"role": "user", "content": [block] * 5}]}
    assert cache_problem(five) == "A maximum of 4 blocks with cache_control may be provided. Found 5."


async def test_a_request_with_bad_cache_control_is_refused_with_a_400() -> None:
    async with open_fake_anthropic() as fake:
        result, _ = await run_jobs(
            "anthropic",
            settings(fake),
            [{"id": "j", "prompt": "x"}],
            model=MODEL,
            anthropic={
                "extra_body": {"system": [{"type": "text", "text": "s", "cache_control": {"type": "x"}}]}
            },
        )
    job = result.jobs["j"]
    assert job.status == "failed" and job.error_kind == "bad_request" and "cache_control" in (job.error or "")
    assert fake.unused == 0 and len(fake.message_requests()) == 1
