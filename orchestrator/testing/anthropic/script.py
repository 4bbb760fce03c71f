"""What a test scripts on the fake Anthropic Messages API, and what the fake records.

Plain frozen values, no I/O: the responses a test queues (:class:`Reply` made of :class:`Text`,
:class:`Thinking` and :class:`ToolUse` blocks, :class:`HttpError`, :class:`ErrorMidStream`,
:class:`Disconnect`, :class:`Stall`, :class:`~orchestrator.testing.raw.Raw`), each request as the
fake received it (:class:`RecordedRequest`), and two ready-made responders. How a response goes on
the wire is in :mod:`.wire`; the server that plays the script is :mod:`.server`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from orchestrator.testing.raw import Raw


@attrs.frozen
class Text:
    """A text block, streamed as ``text_delta`` pieces: ``chunks`` if given, else runs of
    ``chunk_chars`` characters."""

    text: str
    chunks: tuple[str, ...] | None = None
    chunk_chars: int = 24

    def pieces(self) -> list[str]:
        """The ``text_delta`` pieces, in order; at least one (an empty text is one empty piece)."""
        if self.chunks is not None:
            return list(self.chunks)
        n = max(1, self.chunk_chars)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)] or [""]


@attrs.frozen
class Thinking:
    """A thinking block, streamed as ``thinking_delta`` pieces, then its ``signature_delta``."""

    text: str
    signature: str = "ZmFrZS1zaWduYXR1cmU="
    chunk_chars: int = 24


@attrs.frozen
class ToolUse:
    """A tool call; its input JSON is streamed in a few ``input_json_delta`` pieces."""

    name: str
    input: Mapping[str, Any]
    id: str | None = None


Block = Text | Thinking | ToolUse


@attrs.frozen
class Usage:
    """Token counts the fake reports; ``output_tokens`` None: about a token per 4 characters."""

    input_tokens: int = 10
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


@attrs.frozen
class Reply:
    """A complete answer.

    ``stop_reason`` None means ``tool_use`` when a block is a :class:`ToolUse`, else
    ``end_turn``. ``model`` None echoes the request's model. ``delay`` waits before the status
    line; ``event_gap`` between events. ``write_size`` sends the streamed body in writes (HTTP
    chunks) of that many bytes, so chunk boundaries fall inside multi-byte characters.
    """

    blocks: tuple[Block, ...]
    stop_reason: str | None = None
    usage: Usage = Usage()
    model: str | None = None
    delay: float = 0.0
    event_gap: float = 0.0
    write_size: int | None = None

    @classmethod
    def text(cls, *texts: str, **kwargs: Any) -> Reply:
        """A reply of one text block per argument."""
        return cls(tuple(Text(t) for t in texts), **kwargs)

    def output_tokens(self) -> int:
        """What ``usage.output_tokens`` says: as scripted, else estimated from the blocks' size."""
        if self.usage.output_tokens is not None:
            return self.usage.output_tokens
        chars = sum(
            len(b.text) if not isinstance(b, ToolUse) else len(orjson.dumps(b.input)) for b in self.blocks
        )
        return max(1, math.ceil(chars / 4))

    def final_stop_reason(self) -> str:
        """The ``stop_reason`` the reply ends with (see the class docstring)."""
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


@attrs.frozen
class HttpError:
    """An error status with ``{"type": "error", "error": {...}}``; ``error_type`` None picks the API's
    type for the status. ``retry_after`` (seconds) becomes the ``retry-after`` header."""

    status: int
    message: str | None = None
    error_type: str | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ErrorMidStream:
    """Streams ``partial`` as the start of a text block, then an SSE ``error`` event and ends.
    A non-streaming request gets the error's status and JSON body instead."""

    partial: str = "partial"
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@attrs.frozen
class Disconnect:
    """Streams ``partial`` (None: nothing, not even the status line), then resets the connection."""

    partial: str | None = "partial"


@attrs.frozen
class Stall:
    """Streams ``partial`` (None: nothing, not even the status line), then goes silent for
    ``seconds`` (None: until the client hangs up or the fake closes) and closes the connection."""

    partial: str | None = None
    seconds: float | None = None


Response = Reply | HttpError | ErrorMidStream | Disconnect | Stall | Raw


@attrs.frozen
class RecordedRequest:
    """One request as the fake received it. ``headers`` have lower-case names; ``body`` is the
    parsed JSON body (None when empty or not JSON); ``time`` is ``trio.current_time()``."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    time: float
    response: str
    """The class name of the scripted response it got (``"Reply"``, ...), or ``"-"``."""

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def output_schema(self) -> Any:
        """The JSON Schema the request's ``output_config.format`` carries, or None."""
        return output_schema(self.body)

    def prompt(self) -> str:
        """The text of the last user message, without ``<system-reminder>`` blocks."""
        for message in reversed(_messages(self.body)):
            if message.get("role") == "user":
                return "\n".join(_user_texts(message))
        return ""

    def cache_breakpoints(self) -> list[str]:
        """Where the request marks ``cache_control``: ``system[i]``, ``messages[i].content[j]``,
        ``tools[i]``, in request order."""
        return [where for where, _ in _cache_controls(self.body)]

    def tool_results(self) -> list[Mapping[str, Any]]:
        """The ``tool_result`` blocks of the last user message."""
        for message in reversed(_messages(self.body)):
            if message.get("role") == "user":
                content = message.get("content")
                return (
                    [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
                    if isinstance(content, list)
                    else []
                )
        return []


Responder = Callable[[RecordedRequest], Response]


def script_exhausted(request: RecordedRequest) -> Response:
    """The default ``default``: a 500 saying the test scripted too few responses."""
    return HttpError(500, "fake: no scripted response left for this request")


def demo_reply(request: RecordedRequest) -> Response:
    """A responder for demos: answers a tool result by quoting it; a prompt with a line
    ``$ COMMAND`` (when the client offers a ``Bash`` tool) by asking to run that command; any
    other prompt with a short text that quotes it."""
    results = request.tool_results()
    if results:
        content = results[-1].get("content")
        text = content if isinstance(content, str) else orjson.dumps(content).decode()
        return Reply.text(f"The command printed: {text.strip()[:300]}")
    prompt = request.prompt()
    tools = [t.get("name") for t in (request.body or {}).get("tools", []) if isinstance(t, dict)]
    command = next((line[2:].strip() for line in prompt.splitlines() if line.startswith("$ ")), None)
    if command and "Bash" in tools:
        return Reply((Text("I will run it."), ToolUse("Bash", {"command": command, "description": "Run it"})))
    first = prompt.strip().splitlines()[0][:200] if prompt.strip() else "(empty prompt)"
    return Reply.text(f"This is a fake reply to: {first}")


def _messages(body: Any) -> list[dict[str, Any]]:
    messages = body.get("messages") if isinstance(body, dict) else None
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _user_texts(message: Mapping[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    texts = (
        [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        if isinstance(content, list)
        else []
    )
    return [t for t in texts if isinstance(t, str) and not t.lstrip().startswith("<system-reminder>")]


MAX_CACHE_BREAKPOINTS = 4  # the API's limit per request


def cache_problem(body: Any) -> str | None:
    """Why the API would refuse the request's ``cache_control`` markers (a 400), or None: each
    must be ``{"type": "ephemeral"}`` (optionally with ``ttl`` ``5m`` or ``1h``), on a content
    block of ``system`` (a list of blocks then), of a message's content, or on a tool, and a
    request may hold at most four."""
    if isinstance(body, dict) and isinstance(body.get("system"), list):
        for i, block in enumerate(body["system"]):
            if not (
                isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
            ):
                return f"system.{i}: expected a text block"
    found = _cache_controls(body)
    for where, marker in found:
        if not isinstance(marker, dict) or marker.get("type") != "ephemeral" or set(marker) - {"type", "ttl"}:
            return f"{where}.cache_control: expected {{'type': 'ephemeral'}}"
        if marker.get("ttl", "5m") not in ("5m", "1h"):
            return f"{where}.cache_control.ttl: expected '5m' or '1h'"
    if len(found) > MAX_CACHE_BREAKPOINTS:
        return (
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(found)}."
        )
    return None


def output_format_problem(body: Any) -> str | None:
    """Why the API would refuse the request's structured-output request (a 400), or None:
    ``output_config.format`` must be ``{"type": "json_schema", "schema": {...}}``."""
    if not isinstance(body, dict) or "output_config" not in body:
        return None
    config = body["output_config"]
    if not isinstance(config, dict):
        return "output_config: Input should be an object"
    found = config.get("format")
    if found is None:
        return None
    if not isinstance(found, dict) or found.get("type") != "json_schema":
        return "output_config.format.type: Input should be 'json_schema'"
    if not isinstance(found.get("schema"), dict):
        return "output_config.format.schema: Field required (a JSON Schema object)"
    extra = sorted(set(found) - {"type", "schema"})
    if extra:
        return f"output_config.format.{extra[0]}: Extra inputs are not permitted"
    unsupported = _unsupported_constraint(found["schema"])
    if unsupported is not None:
        return f"output_config.format.schema: '{unsupported}' is not supported in structured outputs"
    return None


_UNSUPPORTED = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength"}
)


def _unsupported_constraint(schema: Any) -> str | None:
    """The first constraint the API's structured outputs refuse, anywhere in ``schema``."""
    if isinstance(schema, list):
        return next((found for item in schema if (found := _unsupported_constraint(item))), None)
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if key in _UNSUPPORTED or key == "maxItems" or (key == "minItems" and value not in (0, 1)):
            return str(key)
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            found = _unsupported_constraint(list(value.values()))
        elif key in ("const", "enum", "default", "examples"):
            continue
        else:
            found = _unsupported_constraint(value)
        if found is not None:
            return found
    return None


def output_schema(body: Any) -> Any:
    """The JSON Schema the request asks the reply to meet (``output_config.format.schema``), or
    None."""
    config = body.get("output_config") if isinstance(body, dict) else None
    found = config.get("format") if isinstance(config, dict) else None
    return found.get("schema") if isinstance(found, dict) else None


def _cache_controls(body: Any) -> list[tuple[str, Any]]:
    if not isinstance(body, dict):
        return []
    found: list[tuple[str, Any]] = []
    for key in ("tools", "system"):
        items = body.get(key)
        if isinstance(items, list):
            found += [
                (f"{key}[{i}]", b["cache_control"])
                for i, b in enumerate(items)
                if isinstance(b, dict) and "cache_control" in b
            ]
    for i, message in enumerate(_messages(body)):
        content = message.get("content")
        if isinstance(content, list):
            found += [
                (f"messages[{i}].content[{j}]", b["cache_control"])
                for j, b in enumerate(content)
                if isinstance(b, dict) and "cache_control" in b
            ]
    return found
