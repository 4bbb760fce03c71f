"""The Anthropic and OpenAI stream decoders are total: whatever JSON a server sends, out come
well-typed stream events or a BackendError, never another exception."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends.http.decoders.anthropic import AnthropicDecoder
from orchestrator.backends.http.decoders.openai import OpenAIDecoder
from orchestrator.backends.http.prices import ANTHROPIC_PRICES, OPENAI_PRICES
from orchestrator.errors import BackendError, RetryableError
from orchestrator.events import TextDelta
from orchestrator.http import ServerSentEvent, SSEDecoder
from orchestrator.testing.anthropic import script as anthropic_script
from orchestrator.testing.anthropic.wire import error_event, partial_events
from orchestrator.testing.anthropic.wire import reply_events as anthropic_events
from orchestrator.testing.openai import script as openai_script
from orchestrator.testing.openai.wire import reply_events as openai_events
from tests.fuzz import JSON, check_events, stream_of

ANTHROPIC_MODEL = "claude-sonnet-4-5"
OPENAI_MODEL = "gpt-4o-mini"

ANTHROPIC_REPLY = anthropic_script.Reply(
    (
        anthropic_script.Thinking("Let me see.", chunk_chars=4),
        anthropic_script.Text("Hello, wörld ☃", chunk_chars=5),
        anthropic_script.ToolUse("lookup", {"q": "x", "n": [1, 2]}),
    ),
    usage=anthropic_script.Usage(cache_read_input_tokens=3),
)
ANTHROPIC_STREAMS = [
    [data for _, data in anthropic_events(ANTHROPIC_REPLY, ANTHROPIC_MODEL)],
    [
        data
        for _, data in (
            *partial_events("cut short", ANTHROPIC_MODEL),
            error_event("overloaded_error", "busy"),
        )
    ],
]


def _openai_stream(reply: openai_script.Reply) -> list[Any]:
    sse = SSEDecoder()
    events = [e for raw in openai_events(reply, OPENAI_MODEL, wants_usage=True) for e in sse.feed(raw)]
    return [e.data if e.data == "[DONE]" else orjson.loads(e.data) for e in events]


OPENAI_STREAMS = [
    _openai_stream(
        openai_script.Reply(
            "Hello there, wörld",
            reasoning="hmm",
            tool_calls=(openai_script.Tool("lookup", {"q": "x"}),),
            cached_tokens=4,
        )
    ),
    _openai_stream(openai_script.Reply("no done marker", done=False)),
]


def _anthropic_name(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else "message"


def decode_anthropic(stream: list[Any]) -> None:
    decoder = AnthropicDecoder(ANTHROPIC_MODEL, ANTHROPIC_PRICES, lambda text: text)
    try:
        for value in stream:
            check_events(decoder.feed(ServerSentEvent(json.dumps(value), _anthropic_name(value))))
            if decoder.done:
                return
        check_events(decoder.finish())
    except BackendError:
        pass  # the attempt ends with a classified error: allowed


def decode_openai(stream: list[Any]) -> None:
    decoder = OpenAIDecoder(OPENAI_MODEL, OPENAI_PRICES, lambda text: text)
    try:
        for value in stream:
            data = value if value == "[DONE]" else json.dumps(value)
            check_events(decoder.feed(ServerSentEvent(data)))
            if decoder.done:
                return
        check_events(decoder.finish())
    except BackendError:
        pass


@pytest.mark.parametrize("stream", ANTHROPIC_STREAMS[:1])
def test_the_anthropic_seed_stream_decodes_to_well_typed_events(stream: list[Any]) -> None:
    decoder = AnthropicDecoder(ANTHROPIC_MODEL, ANTHROPIC_PRICES, lambda text: text)
    events = [e for value in stream for e in decoder.feed(ServerSentEvent(json.dumps(value), value["type"]))]
    assert decoder.done and "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, wörld ☃"
    check_events(events)


@given(st.sampled_from(ANTHROPIC_STREAMS).flatmap(stream_of))
def test_the_anthropic_decoder_is_total_on_mutated_streams(stream: list[Any]) -> None:
    decode_anthropic(stream)


@given(st.lists(JSON, max_size=8))
def test_the_anthropic_decoder_is_total_on_random_json(stream: list[Any]) -> None:
    decode_anthropic(stream)


def test_the_openai_seed_streams_decode_to_well_typed_events() -> None:
    for stream in OPENAI_STREAMS:
        decoder = OpenAIDecoder(OPENAI_MODEL, OPENAI_PRICES, lambda text: text)
        events = [
            e for v in stream for e in decoder.feed(ServerSentEvent(v if v == "[DONE]" else json.dumps(v)))
        ]
        if not decoder.done:
            events += decoder.finish()
        assert any(isinstance(e, TextDelta) for e in events)
        check_events(events)


@given(st.sampled_from(OPENAI_STREAMS).flatmap(stream_of))
def test_the_openai_decoder_is_total_on_mutated_streams(stream: list[Any]) -> None:
    decode_openai(stream)


@given(st.lists(JSON, max_size=8))
def test_the_openai_decoder_is_total_on_random_json(stream: list[Any]) -> None:
    decode_openai(stream)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "content_block_delta", "index": 0, "delta": "oops"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ["part"]}},
        {"type": "content_block_delta", "index": [0], "delta": {"type": "text_delta", "text": "x"}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": 7}},
        {"type": "message_delta", "delta": {"stop_reason": {"why": "done"}}},
    ],
)
def test_a_wrong_typed_anthropic_field_is_a_protocol_error(data: dict[str, Any]) -> None:
    decoder = AnthropicDecoder(ANTHROPIC_MODEL, ANTHROPIC_PRICES, lambda text: text)
    decoder.feed(
        ServerSentEvent(
            json.dumps({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}})
        )
    )
    with pytest.raises(RetryableError, match="malformed stream") as caught:
        decoder.feed(ServerSentEvent(json.dumps(data), data["type"]))
    assert caught.value.kind == "protocol"


@pytest.mark.parametrize(
    "data",
    [
        {"choices": "oops"},
        {"choices": ["oops"]},
        {"choices": [{"delta": "oops"}]},
        {"choices": [{"delta": {"content": ["part"]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": [0], "function": {"name": "f"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": {"a": 1}}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": 3}]},
    ],
)
def test_a_wrong_typed_openai_field_is_a_protocol_error(data: dict[str, Any]) -> None:
    decoder = OpenAIDecoder(OPENAI_MODEL, OPENAI_PRICES, lambda text: text)
    with pytest.raises(RetryableError, match="malformed stream") as caught:
        decoder.feed(ServerSentEvent(json.dumps(data)))
    assert caught.value.kind == "protocol"


def test_odd_ids_and_usage_counts_read_as_unknown_and_the_reply_goes_on() -> None:
    decoder = OpenAIDecoder(OPENAI_MODEL, OPENAI_PRICES, lambda text: text)
    first = {"id": ["x"], "model": 5, "choices": [{"delta": {"content": "hi"}}]}
    last = {
        "choices": [{"delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": "3", "completion_tokens": 2.5},
    }
    events = decoder.feed(ServerSentEvent(json.dumps(first))) + decoder.feed(
        ServerSentEvent(json.dumps(last))
    )
    events += decoder.feed(ServerSentEvent("[DONE]"))
    check_events(events)
    assert [type(e).__name__ for e in events][:2] == ["SessionStarted", "TextDelta"]


WHOLE_REPLIES = [
    {
        "id": "msg_1",
        "type": "message",
        "model": ANTHROPIC_MODEL,
        "content": [
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 2},
    },
    {
        "id": "c",
        "object": "chat.completion",
        "model": OPENAI_MODEL,
        "choices": [{"index": 0, "message": {"content": "hi", "tool_calls": []}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    },
]


@given(stream_of(WHOLE_REPLIES), st.booleans())
def test_reading_a_whole_reply_is_total(bodies: list[Any], anthropic: bool) -> None:
    for body in bodies:
        if not isinstance(body, dict):
            continue
        decoder: Any = (
            AnthropicDecoder(ANTHROPIC_MODEL, ANTHROPIC_PRICES, lambda t: t)
            if anthropic
            else OpenAIDecoder(OPENAI_MODEL, OPENAI_PRICES, lambda t: t)
        )
        try:
            check_events(decoder.reply(body))
        except BackendError:
            pass
