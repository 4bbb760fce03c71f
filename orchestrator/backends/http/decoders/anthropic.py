"""Anthropic Messages API stream → stream events. Pure: server-sent events in, events out.

Wire format (``POST /v1/messages`` with ``"stream": true``): ``message_start`` (id, model,
input usage), then per content block ``content_block_start``, ``content_block_delta`` (
``text_delta``, ``thinking_delta``, ``signature_delta``, ``input_json_delta``, ...) and
``content_block_stop``, then ``message_delta`` (stop reason, cumulative usage) and
``message_stop``; ``ping`` at any time; ``error`` when the server gives up mid-stream. Unknown
event and delta types are ignored, so a new API feature does not break old clients.

Events made: :class:`SessionStarted` at ``message_start``; :class:`TextDelta` and
:class:`ThinkingDelta` as they arrive; :class:`ToolCall` with the whole input once a tool block
stops (its JSON arrives in pieces); at ``message_stop`` the :class:`AssistantMessage`, one
:class:`UsageReported` and :class:`StreamFinished` (tokens including cache reads and writes,
cost from the price table, None for a model without a price). Usage is reported only at the end:
a stream cut short reports none, since its totals are unknown. A stream that ends without
``message_stop`` after a ``message_delta`` with the stop reason and usage is complete (with a
:class:`StreamWarning`).

Malformed data never escapes as an exception of its own: an event that is not a JSON object, or a
field the reply is made of (text, tool calls, block indexes, the stop reason) with the wrong type,
ends the attempt with a retryable ``protocol`` error; ids, the model
name and usage counts of the wrong type read as unknown (see :mod:`orchestrator.backends.fields`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from orchestrator.backends.fields import (
    as_object,
    int_at,
    int_or_none,
    list_at,
    object_at,
    str_at,
    str_or_none,
)
from orchestrator.backends.http.prices import Price, PriceBook, as_book, unpriced
from orchestrator.backends.http.status import Redact, error_in_stream, message_of
from orchestrator.errors import ErrorKind, RetryableError
from orchestrator.events import (
    AssistantMessage,
    ContentBlock,
    SessionStarted,
    StreamEvent,
    StreamFinished,
    StreamWarning,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    Tokens,
    ToolCall,
    ToolUseBlock,
    UsageReported,
)
from orchestrator.http import ServerSentEvent


@attrs.define
class _Block:
    type: str
    parts: list[str] = attrs.Factory(list)
    call_id: str = ""
    name: str = ""
    signature: str = ""


def parse_tool_input(raw: str) -> tuple[Mapping[str, Any], str | None]:
    """A tool's input from its assembled JSON text, and a warning when it is not a JSON object
    (the text is then kept whole under ``"_raw"`` rather than lost)."""
    if not raw.strip():
        return {}, None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"_raw": raw}, "tool input is not valid JSON; kept as text under '_raw'"
    if not isinstance(value, dict):
        return {"_raw": raw}, "tool input is not a JSON object; kept as text under '_raw'"
    return value, None


class AnthropicDecoder:
    """One attempt's stream. ``model`` is the job's (the server's, from ``message_start``,
    wins for pricing); ``prices`` the backend's price table."""

    def __init__(self, model: str | None, prices: PriceBook | Mapping[str, Price], redact: Redact) -> None:
        self.model = model
        self.prices = as_book("anthropic", prices)
        self.redact = redact
        self.done = False
        self.request_id: str | None = None
        self.message_id: str | None = None
        self.stop_reason: str | None = None
        self.final_usage = False  # a message_delta carried usage
        self.usage: dict[str, int] = {}
        self.blocks: dict[int, _Block] = {}
        self._handlers: dict[str, Callable[[Mapping[str, Any]], list[StreamEvent]]] = {
            "content_block_delta": self._delta,
            "content_block_start": self._block_start,
            "content_block_stop": self._block_stop,
            "message_start": self._message_start,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
            "error": self._error,
        }

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        """The events one server-sent event makes. Raises :class:`BackendError` for an ``error``
        event and for a known event whose fields have the wrong types (``protocol``)."""
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            data = None
        if event.event == "error":  # Anthropic's error event, or an ``error:`` line of a proxy
            return self._error(data if isinstance(data, dict) else {"error": event.data})
        if not isinstance(data, dict):
            # The text it carried would be lost: fail the attempt (retryable) instead.
            raise RetryableError(
                f"event {event.event!r} is not a JSON object: {event.data[:200]!r}", kind=ErrorKind.PROTOCOL
            )
        handler = self._handlers.get(str_or_none(data.get("type")) or event.event)
        return handler(data) if handler is not None else []  # ping and unknown types

    def reply(self, body: Mapping[str, Any]) -> list[StreamEvent]:
        """The events of a whole ``message`` (a server that ignored ``"stream": true``): read as
        the stream that would have carried it."""
        out = self._message_start({"message": body})
        for n, raw in enumerate(list_at(body, "content", "message")):
            block = as_object(raw, f"message.content[{n}]")
            out += self._block_start({"index": n, "content_block": block})
            if self.blocks[n].type == "tool_use":
                self.blocks[n].parts.append(orjson.dumps(block.get("input") or {}).decode())
            out += self._block_stop({"index": n})
        out += self._message_delta(
            {"delta": {"stop_reason": body.get("stop_reason")}, "usage": body.get("usage")}
        )
        return out + self._message_stop({})

    def finish(self) -> list[StreamEvent]:
        """A body that ended before ``message_stop``: complete all the same once ``message_delta``
        gave the stop reason and the final usage (a proxy dropped the last event; asking again
        would pay for the reply twice), else a cut stream (retryable)."""
        if self.stop_reason is not None and self.final_usage:
            warning = StreamWarning("the stream ended without message_stop after the final message_delta")
            return [warning, *self._message_stop({})]
        raise RetryableError(
            "stream ended before message_stop: the reply is incomplete", kind=ErrorKind.CONNECTION
        )

    def _block_at(self, data: Mapping[str, Any], where: str) -> _Block | None:
        return self.blocks.get(_index(data, where, -1))

    def _delta(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        where = "content_block_delta"
        delta = object_at(data, "delta", where)
        block = self._block_at(data, where)
        kind = str_at(delta, "type", f"{where}.delta")
        if kind == "text_delta":
            text = str_at(delta, "text", f"{where}.delta") or ""
            if block is not None:
                block.parts.append(text)
            return [TextDelta(text)] if text else []
        if kind == "thinking_delta":
            text = str_at(delta, "thinking", f"{where}.delta") or ""
            if block is not None:
                block.parts.append(text)
            return [ThinkingDelta(text)] if text else []
        if block is not None:
            if kind == "input_json_delta":
                block.parts.append(str_at(delta, "partial_json", f"{where}.delta") or "")
            elif kind == "signature_delta":
                block.signature += str_or_none(delta.get("signature")) or ""
        return []

    def _block_start(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        where = "content_block_start.content_block"
        content = object_at(data, "content_block", "content_block_start")
        kind = str_at(content, "type", where) or "unknown"
        block = _Block(kind)
        if kind == "tool_use":
            block.call_id = str_at(content, "id", where) or ""
            block.name = str_at(content, "name", where) or ""
        self.blocks[_index(data, "content_block_start", len(self.blocks))] = block
        if kind == "text" and (text := str_at(content, "text", where)):
            block.parts.append(text)
            return [TextDelta(text)]
        if kind == "thinking" and (text := str_at(content, "thinking", where)):
            block.parts.append(text)
            return [ThinkingDelta(text)]
        return []

    def _block_stop(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        block = self._block_at(data, "content_block_stop")
        if block is None or block.type != "tool_use":
            return []
        tool_input, warning = parse_tool_input("".join(block.parts))
        call = ToolCall(call_id=block.call_id, name=block.name, input=tool_input)
        return [StreamWarning(f"tool {block.name!r}: {warning}"), call] if warning else [call]

    def _message_start(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        message = object_at(data, "message", "message_start")
        self.message_id = str_or_none(message.get("id"))
        self.model = str_or_none(message.get("model")) or self.model
        self._take_usage(message.get("usage"))
        return [SessionStarted(session_id=self.message_id, model=self.model, request_id=self.request_id)]

    def _message_delta(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        delta = object_at(data, "delta", "message_delta")
        self.stop_reason = str_at(delta, "stop_reason", "message_delta.delta") or self.stop_reason
        self._take_usage(data.get("usage"))
        self.final_usage = self.final_usage or isinstance(data.get("usage"), dict)
        return []

    def _take_usage(self, usage: Any) -> None:
        # Counts in message_delta are cumulative: the latest value of each field wins.
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if int_or_none(v) is not None and v >= 0})

    def _message_stop(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        self.done = True
        usage = self.usage
        tokens = Tokens(
            input=usage.get("input_tokens", 0),
            output=usage.get("output_tokens", 0),
            cache_read=usage.get("cache_read_input_tokens", 0),
            cache_creation=usage.get("cache_creation_input_tokens", 0),
        )
        content: list[ContentBlock] = []
        for _, block in sorted(self.blocks.items()):
            if block.type == "text":
                content.append(TextBlock("".join(block.parts)))
            elif block.type == "thinking":
                content.append(ThinkingBlock("".join(block.parts)))
            elif block.type == "tool_use":
                content.append(
                    ToolUseBlock(block.call_id, block.name, parse_tool_input("".join(block.parts))[0])
                )
        cost, priced_by = self.prices.cost(self.model, tokens)
        events: list[StreamEvent] = [
            AssistantMessage(content=tuple(content), message_id=self.message_id),
            UsageReported(tokens=tokens),
        ]
        if cost is None:
            events.append(StreamWarning(unpriced(self.model, "anthropic")))
        events.append(
            StreamFinished(
                stop_reason=self.stop_reason,
                tokens=tokens,
                cost_usd=cost,
                session_id=self.message_id,
                priced_by=priced_by,
            )
        )
        return events

    def _error(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        message, kind = message_of(data)
        raise error_in_stream(message, kind, None, redact=self.redact)


def _index(data: Mapping[str, Any], where: str, default: int) -> int:
    """The event's content block ``index`` (``default`` when it has none)."""
    index = int_at(data, "index", where)
    return default if index is None else index
