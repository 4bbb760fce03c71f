"""Batch results replayed through the streaming decoders: total on any input, and a result line
of either provider read into an outcome whatever it holds."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends.http.batch.anthropic import MessageBatches
from orchestrator.backends.http.batch.openai import ChatBatches
from orchestrator.backends.http.batch.replay import anthropic_events, openai_events, replay
from orchestrator.backends.http.decoders.anthropic import AnthropicDecoder
from orchestrator.backends.http.decoders.openai import OpenAIDecoder
from orchestrator.backends.http.prices import ANTHROPIC_PRICES, OPENAI_PRICES
from orchestrator.errors import BackendError
from orchestrator.events import AssistantMessage, StreamFinished, TextBlock, ToolCall
from tests.fuzz import JSON, check_events, mutated

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 10, "output_tokens": 5},
}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5},
}


def same(text: str) -> str:
    return text


def anthropic(message: Any) -> list[Any]:
    return replay(AnthropicDecoder(None, ANTHROPIC_PRICES, same), anthropic_events(message))


def openai(completion: Any) -> list[Any]:
    return replay(OpenAIDecoder(None, OPENAI_PRICES, same), openai_events(completion))


def test_a_message_replays_as_its_stream_would_end() -> None:
    for events in (anthropic(MESSAGE), openai(COMPLETION)):
        message = next(e for e in events if isinstance(e, AssistantMessage))
        assert TextBlock("Checking.") in message.content
        assert [e.name for e in events if isinstance(e, ToolCall)] == ["get_weather"]
        assert isinstance(events[-1], StreamFinished) and events[-1].tokens is not None


@given(st.one_of(JSON, mutated(MESSAGE)))
def test_replaying_any_anthropic_result_gives_events_or_a_backend_error(message: Any) -> None:
    try:
        check_events(anthropic(message))
    except BackendError:
        pass


@given(st.one_of(JSON, mutated(COMPLETION)))
def test_replaying_any_openai_result_gives_events_or_a_backend_error(completion: Any) -> None:
    try:
        check_events(openai(completion))
    except BackendError:
        pass


@given(st.one_of(JSON, mutated({"custom_id": "a", "result": {"type": "errored", "error": {"error": {}}}})))
def test_any_anthropic_result_line_reads_as_an_outcome(line: Any) -> None:
    outcome = MessageBatches.__new__(MessageBatches)
    outcome.redact = same
    read = outcome._outcome(json.dumps(line).encode())
    assert isinstance(read.custom_id, str) and (read.error is None or isinstance(read.error, BackendError))


@given(
    st.one_of(JSON, mutated({"custom_id": "a", "response": {"status_code": 500, "body": {}}, "error": None}))
)
def test_any_openai_result_line_reads_as_an_outcome(line: Any) -> None:
    outcome = ChatBatches.__new__(ChatBatches)
    outcome.redact = same
    read = outcome._outcome(json.dumps(line).encode())
    assert isinstance(read.custom_id, str) and (read.error is None or isinstance(read.error, BackendError))
