"""The pure core of the ``local`` backend: llama.cpp's streamed chunks in, stream events out.

No threads, no clock, no model: :class:`ChunkDecoder` is fed the chunks of one chat completion
(JSON text, as llama.cpp's server streams them with ``timings_per_token``) and answers with
events; :class:`StopMatcher` cuts the reply at a stop string whatever the chunking. Stop strings
are matched here rather than by llama.cpp, whose stream does not say whether a stop string or the
end of the turn ended the reply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from orchestrator.backends.fields import (
    as_object,
    count_or_zero,
    dict_or_empty,
    int_or_none,
    list_at,
    object_at,
    str_at,
    str_or_none,
)
from orchestrator.backends.http.decoders.openai import tokens_of_usage
from orchestrator.backends.status import kind_for
from orchestrator.errors import BackendError, ErrorKind, RetryableError, error_for
from orchestrator.events import (
    SessionStarted,
    StreamEvent,
    StreamFinished,
    StreamWarning,
    TextDelta,
    ThinkingDelta,
    Tokens,
    UsageReported,
)

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class StopMatcher:
    """Cuts streamed text at the first stop string, holding back what might be the start of one.

    Whatever the chunking, the concatenated output of :meth:`push` (plus :meth:`flush` when no
    stop string matched) is the text up to, not including, the earliest stop string.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.matched = False
        self._held = ""

    def push(self, text: str) -> str:
        """The part of ``text`` that is safe to show now ("" once a stop string matched)."""
        if self.matched:
            return ""
        if not self.stops:
            return text
        buffer = self._held + text
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self.matched = True
            self._held = ""
            return buffer[: min(found)]
        keep = max((_overlap(buffer, s) for s in self.stops), default=0)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back text, once the stream has ended without a stop string."""
        held, self._held = self._held, ""
        return "" if self.matched else held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def error_from(error: Any) -> BackendError:
    """The error for an ``{"error": ...}`` chunk from llama.cpp's server: its HTTP-style code and
    error type go through the table every backend shares. An error that is not an object is
    still an error (its text is the message)."""
    details = dict_or_empty(error)
    code = int_or_none(details.get("code"))
    error_type = str_or_none(details.get("type"))
    message = f"local model: {str_or_none(details.get('message')) or error}"
    kind = kind_for(code, error_type)
    if kind is ErrorKind.CONTEXT_LENGTH:
        message += " (raise n_ctx in [backends.local])"
    return error_for(kind or ErrorKind.BAD_REQUEST, message)


class ChunkDecoder:
    """Turns the server's streamed chunks (JSON text, in order) into stream events.

    Raises :class:`BackendError` for an error chunk, and a retryable ``protocol`` one for a chunk
    whose text, choices or finish reason have the wrong type (a chunk that is not a JSON object is
    a :class:`StreamWarning`; odd ids and token counts read as unknown). Once
    :attr:`stop_matched` is true the rest of the stream is ignored and the caller should stop the
    generation.
    """

    def __init__(self, model: str, stops: Iterable[str] = ()) -> None:
        self.model = model
        self.session_id: str | None = None
        self.finish_reason: str | None = None
        self.tokens = Tokens()
        self._stops = StopMatcher(stops)
        self._started = False

    @property
    def stop_matched(self) -> bool:
        return self._stops.matched

    def feed(self, chunks: Iterable[str | bytes]) -> list[StreamEvent]:
        """Events for ``chunks``, with adjacent text (and thinking) deltas merged into one."""
        events: list[StreamEvent] = []
        for chunk in chunks:
            for event in self._feed_one(chunk):
                last = events[-1] if events else None
                if isinstance(event, TextDelta) and isinstance(last, TextDelta):
                    events[-1] = TextDelta(last.text + event.text)
                elif isinstance(event, ThinkingDelta) and isinstance(last, ThinkingDelta):
                    events[-1] = ThinkingDelta(last.text + event.text)
                else:
                    events.append(event)
        return events

    def _feed_one(self, chunk: str | bytes) -> list[StreamEvent]:
        try:
            data = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            return [StreamWarning(f"local model: a chunk that is not JSON: {chunk[:80]!r}")]
        if not isinstance(data, dict):
            return [StreamWarning(f"local model: a chunk that is not a JSON object: {chunk[:80]!r}")]
        if "error" in data:
            raise error_from(data["error"])
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            self.session_id = str_or_none(data.get("id"))
            events.append(SessionStarted(session_id=self.session_id, model=self.model))
        if self.stop_matched:
            return events  # frozen: text and counts as they were when the stop string ended the reply
        if timings := dict_or_empty(data.get("timings")):
            self.tokens = _tokens_from_timings(timings)
        if usage := dict_or_empty(data.get("usage")):
            self.tokens = tokens_of_usage(usage)
        for n, raw in enumerate(list_at(data, "choices", "local model: chunk")):
            where = f"local model: chunk.choices[{n}]"
            choice = as_object(raw, where)
            delta = object_at(choice, "delta", where)
            if reasoning := str_at(delta, "reasoning_content", f"{where}.delta"):
                events.append(ThinkingDelta(reasoning))
            if content := str_at(delta, "content", f"{where}.delta"):
                if text := self._stops.push(content):
                    events.append(TextDelta(text))
                if self.stop_matched:
                    break
            if reason := str_at(choice, "finish_reason", where):
                self.finish_reason = reason
                if held := self._stops.flush():
                    events.append(TextDelta(held))
        return events

    def finish(self, duration_s: float | None) -> list[StreamEvent]:
        """The closing events once the stream has ended; raises if it ended without a reason."""
        if self.stop_matched:
            stop_reason = "stop_sequence"
        elif self.finish_reason is not None:
            stop_reason = _STOP_REASONS.get(self.finish_reason, self.finish_reason)
        else:
            raise RetryableError(
                "local model: the stream ended without a finish reason", kind=ErrorKind.CONNECTION
            )
        return [
            UsageReported(tokens=self.tokens),
            StreamFinished(
                stop_reason=stop_reason,
                tokens=self.tokens,
                cost_usd=0.0,
                duration_s=duration_s,
                turns=1,
                session_id=self.session_id,
            ),
        ]


def _tokens_from_timings(timings: Mapping[str, Any]) -> Tokens:
    # On every chunk (timings_per_token): prompt tokens evaluated, prompt tokens reused, tokens so far.
    return Tokens(
        input=count_or_zero(timings.get("prompt_n")),
        output=count_or_zero(timings.get("predicted_n")),
        cache_read=count_or_zero(timings.get("cache_n")),
    )
