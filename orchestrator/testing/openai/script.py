"""What a test scripts on the fake OpenAI chat-completions API, and what the fake records.

Plain frozen values, no I/O: the responses a test queues (:class:`Reply` with :class:`Tool` calls,
:class:`HttpError`, :class:`ErrorMidStream`, :class:`Disconnect`, :class:`Stall`,
:class:`~orchestrator.testing.raw.Raw`), each request as the fake received it
(:class:`RecordedRequest`), and ready-made responders. How a response goes on the wire is in
:mod:`.wire`; the server that plays the script is :mod:`.server`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from orchestrator.testing.raw import Raw


@attrs.frozen
class Tool:
    """A tool call; its arguments are streamed in pieces of ``piece_chars`` characters."""

    name: str
    arguments: Mapping[str, Any]
    id: str | None = None
    piece_chars: int = 5


@attrs.frozen
class Reply:
    """A streamed answer: ``text`` in deltas of ``chunk_chars`` characters (or ``chunks``), then
    tool calls. ``usage`` False: no usage chunk even when asked; ``done`` False: no ``[DONE]``.
    ``write_size`` splits the body into HTTP chunks of that many bytes (inside characters)."""

    text: str = ""
    tool_calls: tuple[Tool, ...] = ()
    chunks: tuple[str, ...] | None = None
    chunk_chars: int = 8
    reasoning: str = ""
    prompt_tokens: int = 10
    cached_tokens: int = 0
    completion_tokens: int | None = None
    usage: bool = True
    finish_reason: str | None = None
    model: str | None = None
    done: bool = True
    event_gap: float = 0.0
    write_size: int | None = None
    delay: float = 0.0
    """Silence before the status line: the model's time to its first token."""

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        n = max(1, self.chunk_chars)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)]

    def tokens(self) -> int:
        """Prompt plus completion tokens, as the usage chunk reports them."""
        completion = self.completion_tokens
        return self.prompt_tokens + (max(1, len(self.pieces())) if completion is None else completion)


@attrs.frozen
class HttpError:
    """An error status with OpenAI's ``{"error": {message, type, param, code}}`` body (or
    ``body`` as is). ``retry_after`` may be seconds or an HTTP date."""

    status: int
    message: str = "fake error"
    type: str | None = None
    code: str | None = None
    retry_after: float | str | None = None
    retry_after_ms: float | None = None
    body: bytes | None = None


@attrs.frozen
class ErrorMidStream:
    """Streams ``partial``, then an error object inside the stream, and ends the body."""

    partial: str = "partial"
    message: str = "The server had an error while processing your request."
    type: str = "server_error"


@attrs.frozen
class Disconnect:
    """Streams ``partial`` (None: not even the status line), then resets the connection."""

    partial: str | None = "partial"


@attrs.frozen
class Stall:
    """Streams ``partial`` (None: not even the status line), then says nothing for ``seconds``
    (None: until the client hangs up) and closes."""

    partial: str | None = "partial"
    seconds: float | None = None


Response = Reply | HttpError | ErrorMidStream | Disconnect | Stall | Raw


@attrs.frozen
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    response: str

    @property
    def prompt(self) -> str:
        messages = self.body.get("messages", []) if isinstance(self.body, dict) else []
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users and isinstance(users[-1], str) else ""

    @property
    def output_schema(self) -> Any:
        """The JSON Schema the request's ``response_format`` carries, or None."""
        return output_schema(self.body)


Responder = Callable[[RecordedRequest], Response]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def response_format_problem(body: Any) -> str | None:
    """Why the API would refuse the request's ``response_format`` (a 400), or None.

    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` needs a name of at
    most 64 letters, digits, ``_`` or ``-`` and a schema object; with ``strict`` true every
    object in the schema must set ``additionalProperties: false`` and require all its properties.
    """
    found = body.get("response_format") if isinstance(body, dict) else None
    if found is None:
        return None
    if not isinstance(found, dict) or found.get("type") not in ("text", "json_object", "json_schema"):
        return "Invalid value for 'response_format.type': expected 'text', 'json_object' or 'json_schema'."
    if found["type"] != "json_schema":
        return None
    spec = found.get("json_schema")
    if not isinstance(spec, dict):
        return "Missing required parameter: 'response_format.json_schema'."
    if not isinstance(spec.get("name"), str) or not _NAME.fullmatch(spec["name"]):
        return "Invalid 'response_format.json_schema.name': letters, digits, '_' and '-', at most 64."
    if not isinstance(spec.get("schema"), dict):
        return "Invalid 'response_format.json_schema.schema': expected an object."
    if spec.get("strict") is True:
        return _strict_problem(spec["schema"], "")
    return None


def _strict_problem(schema: Any, where: str) -> str | None:
    """The first object in ``schema`` that strict mode would refuse, as the API words it."""
    if isinstance(schema, list):
        return next((p for i, s in enumerate(schema) if (p := _strict_problem(s, f"{where}/{i}"))), None)
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return (
                f"Invalid schema for response_format: In context=({where or '/'}), "
                "'additionalProperties' is required to be supplied and to be false."
            )
        if isinstance(properties, dict) and sorted(schema.get("required", [])) != sorted(properties):
            return (
                f"Invalid schema for response_format: In context=({where or '/'}), 'required' is "
                "required to be supplied and to be an array including every key in properties."
            )
    for key, child in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(child, dict):
            for name, sub in child.items():
                if problem := _strict_problem(sub, f"{where}/{key}/{name}"):
                    return problem
        elif key in ("items", "anyOf", "allOf", "oneOf"):
            if problem := _strict_problem(child, f"{where}/{key}"):
                return problem
    return None


def output_schema(body: Any) -> Any:
    """The JSON Schema the request asks the reply to meet (``response_format.json_schema``), or
    None."""
    found = body.get("response_format") if isinstance(body, dict) else None
    spec = found.get("json_schema") if isinstance(found, dict) else None
    return spec.get("schema") if isinstance(spec, dict) else None


def script_exhausted(request: RecordedRequest) -> Response:
    return HttpError(500, "fake: no scripted response left for this request", type="server_error")


def demo_reply(request: RecordedRequest) -> Response:
    """Answers any prompt with a short text quoting it (for demos)."""
    first = (request.prompt.strip().splitlines() or ["(empty prompt)"])[0][:200]
    return Reply(f"This is a fake reply to: {first}", event_gap=0.01)


def timed_reply(words: int, seconds: float) -> Responder:
    """A responder for benchmarks: ``words`` content deltas, all at once after ``seconds``;
    usage counts a prompt token per 4 characters (as the runner estimates) and one per word."""

    def answer(request: RecordedRequest) -> Response:
        prompt_tokens = len(request.prompt) // 4 + 1
        return Reply(" word" * words, chunk_chars=5, prompt_tokens=prompt_tokens, delay=seconds)

    return answer
