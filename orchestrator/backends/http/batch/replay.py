"""A complete reply from a batch result, replayed through the streaming decoders. Pure.

A batch result holds the whole ``Message`` (Anthropic) or ``chat.completion`` (OpenAI) that a
non-streamed request returns. Rather than a second reader of those shapes, each is turned into
the few server-sent events a stream of the same reply would be made of (one delta per block with
its whole text) and fed to the backend's own decoder: text, tool calls, usage, stop reason and
cost come out exactly as a streamed attempt's, by the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from orchestrator.backends.http.exchange import StreamDecoder
from orchestrator.errors import ErrorKind, RetryableError
from orchestrator.events import StreamEvent
from orchestrator.http import ServerSentEvent


def replay(decoder: StreamDecoder, events: list[ServerSentEvent]) -> list[StreamEvent]:
    """The stream events ``decoder`` makes of ``events``. Raises what the decoder raises
    (RetryableError or FatalError), and a ``protocol`` error for a reply that does not end."""
    out: list[StreamEvent] = []
    for event in events:
        out += decoder.feed(event)
        if decoder.done:
            return out
    return out + decoder.finish()


def _sse(name: str, data: Mapping[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=_json(data), event=name)


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, say
        raise RetryableError("batch result: a value cannot be read", kind=ErrorKind.PROTOCOL) from None


def anthropic_events(message: Any) -> list[ServerSentEvent]:
    """The stream of an Anthropic ``Message``: start, one start/delta/stop per content block,
    the stop reason and usage, stop. Blocks of unknown types pass through as a block start."""
    if not isinstance(message, dict) or not isinstance(message.get("content", []), list):
        raise RetryableError("batch result: the message is not a Message object", kind=ErrorKind.PROTOCOL)
    start = {key: value for key, value in message.items() if key not in ("content", "stop_reason")}
    events = [_sse("message_start", {"type": "message_start", "message": {**start, "content": []}})]
    for index, block in enumerate(message.get("content", [])):
        if not isinstance(block, dict):
            raise RetryableError("batch result: a content block is not an object", kind=ErrorKind.PROTOCOL)
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": _opening(block)},
            )
        )
        if block.get("type") == "tool_use":
            partial = _json(block.get("input", {}))
            delta: dict[str, Any] = {"type": "input_json_delta", "partial_json": partial}
            events.append(
                _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    ending = {
        "type": "message_delta",
        "delta": {"stop_reason": message.get("stop_reason")},
        "usage": message.get("usage"),
    }
    return [*events, _sse("message_delta", ending), _sse("message_stop", {"type": "message_stop"})]


def _opening(block: Mapping[str, Any]) -> dict[str, Any]:
    """A block as its ``content_block_start`` carries it: text and thinking whole; a tool call
    without its input (that follows as one delta)."""
    if block.get("type") == "tool_use":
        return {key: value for key, value in block.items() if key != "input"}
    return dict(block)


def openai_events(completion: Any) -> list[ServerSentEvent]:
    """The stream of a ``chat.completion``: one chunk with the whole first choice as its delta,
    finish reason and usage, then ``[DONE]``."""
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        raise RetryableError("batch result: the body is not a chat completion", kind=ErrorKind.PROTOCOL)
    choices = []
    for choice in completion["choices"][:1]:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise RetryableError("batch result: a choice has no message", kind=ErrorKind.PROTOCOL)
        delta = dict(choice["message"])
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            delta["tool_calls"] = [
                {**call, "index": index} if isinstance(call, dict) else call
                for index, call in enumerate(calls)
            ]
        choices.append({"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")})
    chunk = {key: value for key, value in completion.items() if key != "choices"}
    chunk["object"] = "chat.completion.chunk"
    chunk["choices"] = choices
    return [ServerSentEvent(data=_json(chunk)), ServerSentEvent(data="[DONE]")]
