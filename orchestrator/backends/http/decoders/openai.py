"""OpenAI chat-completions stream → stream events. Pure: server-sent events in, events out.

Wire format (``POST /chat/completions`` with ``"stream": true`` and
``stream_options.include_usage``): ``chat.completion.chunk`` objects whose ``choices[0].delta``
carries ``content`` pieces or ``tool_calls`` pieces (joined by their ``index``: the first piece
has the call's id and function name, later ones more of the ``arguments`` text), then a chunk
with ``finish_reason``, then a usage chunk with empty ``choices``, then ``data: [DONE]``.

OpenAI-compatible servers (vLLM, llama.cpp, Ollama, LM Studio) differ, and all of this is
tolerated: extra fields; ``reasoning_content``/``reasoning`` deltas (shown as thinking); usage
on the last choice chunk or not at all (tokens and cost are then unknown, and a warning says
so); no ``[DONE]`` after a ``finish_reason`` (the body's end then ends the reply). An error
object inside the stream (``{"error": {...}}``, or vLLM's ``{"object": "error", ...}``) ends
the attempt with the server's message, and so does an ``error:`` field line (older llama.cpp
servers; they send ``data: [DONE]`` after it). ``[DONE]`` is not proof of success: a stream that
reaches it with no content, no tool call and no finish reason fails the attempt (retryable
``protocol``), and a proxy's ``"error": null`` on every chunk is no error. Data that breaks the
format is never an exception of its own: a chunk that is not a JSON object, or a field the reply
is made of (choices, delta text, tool calls, the finish reason) with the wrong type, ends the
attempt with a retryable ``protocol`` error (the text it carried would otherwise be lost); ids,
the model name and usage counts of the wrong type read as unknown (see
:mod:`orchestrator.backends.fields`).

Only choice ``index`` 0 is read (a chunk without an index counts as 0): a job asks for one reply,
and with ``n > 1`` in ``extra_body`` the other choices' chunks interleave with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from orchestrator.backends.fields import (
    as_object,
    count_or_zero,
    dict_or_empty,
    int_at,
    list_at,
    object_at,
    str_at,
    str_or_none,
)
from orchestrator.backends.http.decoders.anthropic import parse_tool_input
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
class _Call:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = attrs.Factory(list)


class OpenAIDecoder:
    """One attempt's stream. ``model`` is the job's (the server's wins for pricing)."""

    def __init__(self, model: str | None, prices: PriceBook | Mapping[str, Price], redact: Redact) -> None:
        self.model = model
        self.prices = as_book("openai", prices)
        self.redact = redact
        self.done = False
        self.request_id: str | None = None
        self.started = False
        self.reply_id: str | None = None
        self.finish_reason: str | None = None
        self.usage: Mapping[str, Any] | None = None
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.thinking: list[str] = []
        self.calls: dict[int, _Call] = {}

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        raw = event.data
        if event.event == "error":
            self._raise_error(_error_payload(raw))
        if raw == "[DONE]":
            # A proxy may end a failed upstream stream with [DONE]: it proves nothing by itself.
            self._check_reply("[DONE]")
            self.done = True
            return self._final()
        try:
            chunk = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _not_json(raw) from None
        if not isinstance(chunk, dict):
            raise _not_json(raw)
        # Some gateways put "error": null on every chunk: only an error that is there counts.
        if chunk.get("error") is not None or chunk.get("object") == "error":
            self._raise_error(chunk)
        return self._chunk(chunk)

    def reply(self, body: Mapping[str, Any]) -> list[StreamEvent]:
        """The events of a whole ``chat.completion`` (a server that ignored ``"stream": true``):
        read as one chunk whose delta is the message."""
        chunk = dict(body)
        choices = list_at(body, "choices", "reply")
        if choices:
            first = as_object(choices[0], "reply.choices[0]")
            message = object_at(first, "message", "reply.choices[0]")
            chunk["choices"] = [{"delta": message, "finish_reason": first.get("finish_reason")}]
        out = self._chunk(chunk)
        self._check_reply("a whole reply")
        self.done = True
        return out + self._final()

    def _chunk(self, chunk: Mapping[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self.started:
            self.started = True
            self.reply_id = str_or_none(chunk.get("id"))
            self.model = str_or_none(chunk.get("model")) or self.model
            out.append(SessionStarted(session_id=self.reply_id, model=self.model, request_id=self.request_id))
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            usage = dict_or_empty(chunk.get("x_groq")).get("usage")  # Groq puts it there
        if isinstance(usage, dict):
            self.usage = usage
        for n, raw in enumerate(list_at(chunk, "choices", "chunk")):
            where = f"chunk.choices[{n}]"
            choice = as_object(raw, where)
            # With n > 1 the choices' chunks interleave: the job's reply is choice 0 alone.
            if (int_at(choice, "index", where) or 0) != 0:
                continue
            self._delta(object_at(choice, "delta", where), out)
            finish_reason = str_at(choice, "finish_reason", where)
            if finish_reason:
                self.finish_reason = finish_reason
        return out

    def finish(self) -> list[StreamEvent]:
        if self.finish_reason is None:
            raise RetryableError("stream ended before the reply was complete", kind=ErrorKind.CONNECTION)
        self.done = True  # a server that ends the body without [DONE]
        return self._final()

    def _check_reply(self, end: str) -> None:
        """Raise a retryable ``protocol`` error when the stream reached ``end`` with nothing of a
        reply: no text, no refusal, no tool call and no finish reason."""
        if not (self.text or self.refusal or self.calls or self.finish_reason):
            raise RetryableError(
                f"the stream ended ({end}) without a reply: no content, tool call or finish reason",
                kind=ErrorKind.PROTOCOL,
            )

    def _delta(self, delta: Mapping[str, Any], out: list[StreamEvent]) -> None:
        where = "chunk.choices[0].delta"
        if refusal := str_at(delta, "refusal", where):
            self.refusal.append(refusal)  # not the answer: kept apart (StreamFinished.refusal)
        text = str_at(delta, "content", where)
        if text:
            self.text.append(text)
            out.append(TextDelta(text))
        thought = str_at(delta, "reasoning_content", where) or str_at(delta, "reasoning", where)
        if thought:
            self.thinking.append(thought)
            out.append(ThinkingDelta(thought))
        for n, raw in enumerate(list_at(delta, "tool_calls", where)):
            piece_at = f"{where}.tool_calls[{n}]"
            piece = as_object(raw, piece_at)
            index = int_at(piece, "index", piece_at)
            call = self.calls.setdefault(len(self.calls) if index is None else index, _Call())
            call.call_id = call.call_id or str_at(piece, "id", piece_at) or ""
            function = object_at(piece, "function", piece_at)
            call.name = call.name or str_at(function, "name", f"{piece_at}.function") or ""
            if arguments := str_at(function, "arguments", f"{piece_at}.function"):
                call.arguments.append(arguments)

    def _final(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        content: list[ContentBlock] = []
        if self.thinking:
            content.append(ThinkingBlock("".join(self.thinking)))
        if self.text:
            content.append(TextBlock("".join(self.text)))
        for index, call in sorted(self.calls.items()):
            tool_input, warning = parse_tool_input("".join(call.arguments))
            call_id = call.call_id or f"call_{index}"
            if warning:
                out.append(StreamWarning(f"tool {call.name!r}: {warning}"))
            out.append(ToolCall(call_id=call_id, name=call.name, input=tool_input))
            content.append(ToolUseBlock(call_id, call.name, tool_input))
        out.append(AssistantMessage(content=tuple(content), message_id=self.reply_id))
        tokens = tokens_of_usage(self.usage) if self.usage is not None else None
        cost = priced_by = None
        if tokens is None:
            out.append(StreamWarning("the server reported no usage: tokens and cost unknown"))
        else:
            out.append(UsageReported(tokens=tokens))
            cost, priced_by = self.prices.cost(self.model, tokens)
            if cost is None:
                out.append(StreamWarning(unpriced(self.model, "openai")))
        out.append(
            StreamFinished(
                stop_reason=self.finish_reason,
                tokens=tokens,
                cost_usd=cost,
                session_id=self.reply_id,
                priced_by=priced_by,
                refusal="".join(self.refusal) if self.refusal else None,
            )
        )
        return out

    def _raise_error(self, chunk: Mapping[str, Any]) -> None:
        message, kind = message_of(chunk)
        error = chunk.get("error")
        code = error.get("code") if isinstance(error, dict) else chunk.get("code")
        status = code if isinstance(code, int) else None
        raise error_in_stream(message, kind, status, redact=self.redact)


def _error_payload(raw: str) -> Mapping[str, Any]:
    """The error of an ``error:`` field line: llama.cpp's ``{"code", "message", "type"}`` as it
    is, anything else as the message."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    return data if isinstance(data, dict) else {"error": raw}


def _not_json(raw: str) -> RetryableError:
    """A data event that is not a JSON object: the text it carried would be lost, so the attempt
    fails (retryable: a proxy's garbled write need not happen twice)."""
    return RetryableError(f"stream data is not a JSON object: {raw[:200]!r}", kind=ErrorKind.PROTOCOL)


def tokens_of_usage(usage: Mapping[str, Any]) -> Tokens:
    """Tokens from an OpenAI-style ``usage`` object (odd counts read as 0). OpenAI counts cached
    prompt tokens inside ``prompt_tokens``; ours are disjoint."""
    prompt = count_or_zero(usage.get("prompt_tokens"))
    details = dict_or_empty(usage.get("prompt_tokens_details"))
    cached = min(prompt, count_or_zero(details.get("cached_tokens")))
    output = count_or_zero(usage.get("completion_tokens"))
    return Tokens(input=prompt - cached, output=output, cache_read=cached)
