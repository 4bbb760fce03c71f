"""The wire format of an OpenAI chat-completions stream, as the fake server writes it: pure
functions from a scripted :class:`~orchestrator.testing.openai.script.Reply` to SSE event bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from orchestrator.testing.openai.script import Reply


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(model: str, delta: Mapping[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return sse(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            **extra,
        }
    )


def partial_events(partial: str, model: str) -> list[bytes]:
    return [chunk(model, {"role": "assistant", "content": ""}), chunk(model, {"content": partial})]


def reply_events(reply: Reply, model: str, wants_usage: bool) -> list[bytes]:
    events = [chunk(model, {"role": "assistant", "content": ""})]
    events += [chunk(model, {"reasoning_content": reply.reasoning})] if reply.reasoning else []
    events += [chunk(model, {"content": piece}) for piece in reply.pieces()]
    for index, tool in enumerate(reply.tool_calls):
        call_id = tool.id or f"call_fake_{index}"
        function = {"name": tool.name, "arguments": ""}
        events.append(
            chunk(
                model,
                {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]},
            )
        )
        text = orjson.dumps(dict(tool.arguments)).decode()
        for i in range(0, len(text), tool.piece_chars):
            piece = {"index": index, "function": {"arguments": text[i : i + tool.piece_chars]}}
            events.append(chunk(model, {"tool_calls": [piece]}))
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    events.append(chunk(model, {}, finish))
    if wants_usage and reply.usage:
        completion = reply.completion_tokens
        if completion is None:
            completion = max(1, len(reply.pieces()))
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": reply.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        }
        events.append(chunk(model, None, usage=usage))
    if reply.done:
        events.append(b"data: [DONE]\n\n")
    return events
