"""How the fake Anthropic Messages API puts a scripted response on the wire. Pure: values → bytes.

HTTP/1.1 response heads (always ``connection: close``: one request per connection), JSON bodies,
the API's error bodies (``{"type": "error", "error": {"type", "message"}}`` with ``retry-after``),
the ``Message`` object, and the server-sent events of a streamed answer (``message_start``,
``ping``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``,
``error``), each framed as ``event: NAME\\ndata: JSON\\n\\n`` and carried in HTTP chunks.

The server (:mod:`.server`) decides when each piece is written; nothing here sleeps or
touches a socket.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from orchestrator.testing.anthropic.script import HttpError, Reply, Text, Thinking, ToolUse

SseEvent = tuple[str, dict[str, Any]]
"""One server-sent event: its name and its data (a JSON object)."""

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
STATUS_OF_ERROR_TYPE = {v: k for k, v in ERROR_TYPES.items()}
SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "transfer-encoding": "chunked",
}
LAST_CHUNK = b"0\r\n\r\n"
_TOOL_INPUT_PIECE = 16  # characters of tool input JSON per input_json_delta

# --- HTTP ----------------------------------------------------------------------------------------------


def response_head(status: int, headers: Mapping[str, str]) -> bytes:
    """The status line and headers, ``connection: close`` and a fresh ``request-id`` first."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [
        f"{k}: {v}" for k, v in {"connection": "close", "request-id": new_id("req_fake_"), **headers}.items()
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> bytes:
    """A whole response with a JSON body and its ``content-length``."""
    data = orjson.dumps(payload)
    head = response_head(
        status, {"content-type": "application/json", "content-length": str(len(data)), **(headers or {})}
    )
    return head + data


def error_response(error: HttpError) -> bytes:
    """The API's JSON error response for ``error``, with ``retry-after`` when it has one."""
    error_type = error.error_type or ERROR_TYPES.get(error.status, "api_error")
    payload = {
        "type": "error",
        "error": {"type": error_type, "message": error.message or f"fake {error.status}"},
        "request_id": new_id("req_fake_"),
    }
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["retry-after"] = f"{error.retry_after:g}"
    return json_response(error.status, payload, headers)


def chunk(data: bytes) -> bytes:
    """One chunk of a ``transfer-encoding: chunked`` body (non-empty: an empty one ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(name: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event as it appears in the body."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# --- the Messages API ------------------------------------------------------------------------------------


def message(reply: Reply, model: str, *, empty: bool = False) -> dict[str, Any]:
    """The ``Message`` object: complete (the non-streaming answer) or ``empty`` as ``message_start``
    carries it (no content, no stop reason, one output token so far)."""
    content: list[dict[str, Any]] = []
    if not empty:
        for index, block in enumerate(reply.blocks):
            match block:
                case Text():
                    content.append({"type": "text", "text": block.text})
                case Thinking():
                    content.append({"type": "thinking", "thinking": block.text, "signature": block.signature})
                case ToolUse():
                    content.append(
                        {
                            "type": "tool_use",
                            "id": tool_use_id(block, index),
                            "name": block.name,
                            "input": dict(block.input),
                        }
                    )
    usage = {
        "input_tokens": reply.usage.input_tokens,
        "cache_creation_input_tokens": reply.usage.cache_creation_input_tokens,
        "cache_read_input_tokens": reply.usage.cache_read_input_tokens,
        "output_tokens": 1 if empty else reply.output_tokens(),
    }
    return {
        "id": new_id("msg_fake_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None if empty else reply.final_stop_reason(),
        "stop_sequence": None,
        "usage": usage,
    }


def reply_events(reply: Reply, model: str) -> list[SseEvent]:
    """The events of a complete streamed answer, in order."""
    events: list[SseEvent] = [
        ("message_start", {"type": "message_start", "message": message(reply, model, empty=True)}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(reply.blocks):
        match block:
            case Text():
                events += _block(index, {"type": "text", "text": ""}, "text_delta", "text", block.pieces())
            case Thinking():
                pieces = Text(block.text, chunk_chars=block.chunk_chars).pieces()
                opening: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                # The signature closes a thinking block, after its text.
                events += _block(index, opening, "thinking_delta", "thinking", pieces, stop=False)
                events.append(_delta(index, {"type": "signature_delta", "signature": block.signature}))
                events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
            case ToolUse():
                opening = {
                    "type": "tool_use",
                    "id": tool_use_id(block, index),
                    "name": block.name,
                    "input": {},
                }
                encoded = orjson.dumps(block.input).decode()
                step = _TOOL_INPUT_PIECE
                # The real API starts a tool's input with an empty piece; clients meet it here too.
                pieces = ["", *(encoded[i : i + step] for i in range(0, len(encoded), step))]
                events += _block(index, opening, "input_json_delta", "partial_json", pieces)
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": reply.final_stop_reason(), "stop_sequence": None},
        "usage": {"output_tokens": reply.output_tokens()},
    }
    events += [("message_delta", delta), ("message_stop", {"type": "message_stop"})]
    return events


def partial_events(partial: str, model: str) -> list[SseEvent]:
    """The opening of an answer that will break: ``message_start`` and part of a text block."""
    start = message(Reply.text(partial), model, empty=True)
    opening = {"type": "text", "text": ""}
    return [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": opening}),
        *(_delta(0, {"type": "text_delta", "text": piece}) for piece in Text(partial).pieces()),
    ]


def error_event(error_type: str, text: str) -> SseEvent:
    """The ``error`` event that ends a stream the server gives up on."""
    return "error", {"type": "error", "error": {"type": error_type, "message": text}}


def tool_use_id(block: ToolUse, index: int) -> str:
    """The block's ``id``, or one derived from its content (not random), so the streamed and the
    JSON form of one reply agree."""
    digest = hashlib.sha256(block.name.encode() + orjson.dumps(block.input)).hexdigest()[:12]
    return block.id or f"toolu_fake_{index}_{digest}"


def new_id(prefix: str) -> str:
    """A fresh id in the API's style (``msg_...``, ``req_...``)."""
    return prefix + uuid.uuid4().hex[:16]


def _block(
    index: int,
    opening: Mapping[str, Any],
    delta_type: str,
    field: str,
    pieces: list[str],
    *,
    stop: bool = True,
) -> list[SseEvent]:
    events: list[SseEvent] = [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
    ]
    events += [_delta(index, {"type": delta_type, field: piece}) for piece in pieces]
    if stop:
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _delta(index: int, delta: Mapping[str, Any]) -> SseEvent:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
