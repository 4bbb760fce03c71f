"""A fake Anthropic Messages API on 127.0.0.1, scripted per request, for tests and demos.

It speaks the real wire format of ``POST /v1/messages`` (any query string, e.g. ``?beta=true``):
server-sent events when the body says ``"stream": true`` (``message_start``, ``ping``,
``content_block_start``/``_delta``/``_stop`` with ``text_delta``, ``input_json_delta``,
``thinking_delta``, ``signature_delta``, ``message_delta``, ``message_stop``, ``error``), a JSON
``Message`` otherwise (the Claude Code CLI falls back to that after a broken stream), and JSON
error bodies with their status codes and ``retry-after`` headers. It binds 127.0.0.1 only, on a
random port unless told otherwise, and keeps every request it gets.

Use it inside a trio test::

    async with open_fake_anthropic() as fake:
        fake.script(Reply.text("Hello!"), HttpError(429, retry_after=1), Reply.text("Again"))
        ...  # point the client at fake.base_url with any API key
        assert [r.stream for r in fake.requests] == [True, True, True]

Each ``POST /v1/messages`` takes the next scripted response; when the script is empty it gets
``fake.default`` (a response, or a function of the request returning one; the default default
is a 500 that says the script ran out, so a test that under-scripts fails loudly). Responses:

``Reply(blocks, ...)``     a complete answer: :class:`Text`, :class:`Thinking`, :class:`ToolUse` blocks
``HttpError(status, ...)`` an error status with a JSON error body (``retry_after`` → header)
``ErrorMidStream(...)``    starts the answer, then an SSE ``error`` event (non-streaming: the error's status)
``Disconnect(...)``        starts the answer, then resets the connection
``Stall(...)``             starts the answer (or not), then sends nothing until the client gives up

Run it alone for demos (``orchestrate jobs/claude.toml``) with the :func:`demo_reply` responder::

    python -m tests.fakes.anthropic_api --port 8765
"""

from __future__ import annotations

import argparse
import hashlib
import math
import socket
import struct
import sys
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import trio

HOST = "127.0.0.1"
_MAX_HEAD = 64 * 1024
_FLUSH_AT = 64 * 1024
_REASONS = {
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
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_STATUS_OF_TYPE = {v: k for k, v in _ERROR_TYPES.items()}

# --- what a test scripts ---------------------------------------------------------------------------


@attrs.frozen
class Text:
    """A text block, streamed as ``text_delta`` pieces: ``chunks`` if given, else runs of
    ``chunk_chars`` characters."""

    text: str
    chunks: tuple[str, ...] | None = None
    chunk_chars: int = 24

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        n = max(1, self.chunk_chars)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)] or [""]


@attrs.frozen
class Thinking:
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
        if self.usage.output_tokens is not None:
            return self.usage.output_tokens
        chars = sum(len(b.text) if not isinstance(b, ToolUse) else len(_json(b.input)) for b in self.blocks)
        return max(1, math.ceil(chars / 4))


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


Response = Reply | HttpError | ErrorMidStream | Disconnect | Stall


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

    def prompt(self) -> str:
        """The text of the last user message, without ``<system-reminder>`` blocks."""
        for message in reversed(_messages(self.body)):
            if message.get("role") == "user":
                return "\n".join(_user_texts(message))
        return ""

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
        text = content if isinstance(content, str) else _json(content).decode()
        return Reply.text(f"The command printed: {text.strip()[:300]}")
    prompt = request.prompt()
    tools = [t.get("name") for t in (request.body or {}).get("tools", []) if isinstance(t, dict)]
    command = next((line[2:].strip() for line in prompt.splitlines() if line.startswith("$ ")), None)
    if command and "Bash" in tools:
        return Reply((Text("I will run it."), ToolUse("Bash", {"command": command, "description": "Run it"})))
    first = prompt.strip().splitlines()[0][:200] if prompt.strip() else "(empty prompt)"
    return Reply.text(f"This is a fake reply to: {first}")


# --- the server ------------------------------------------------------------------------------------


class FakeAnthropic:
    """A running fake; see the module docstring. Not thread-safe: use it from its trio run."""

    def __init__(self, port: int, default: Response | Responder | None, api_key: str | None) -> None:
        self.port = port
        self.default: Response | Responder = default if default is not None else script_exhausted
        self.api_key = api_key
        """When set, a request without this key (``x-api-key`` or ``authorization: Bearer``) gets a
        401, and takes nothing from the script."""
        self.requests: list[RecordedRequest] = []
        self._script: deque[Response | Responder] = deque()
        self._arrived = trio.Condition()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: what ``ANTHROPIC_BASE_URL`` should say."""
        return f"http://{HOST}:{self.port}"

    def script(self, *responses: Response | Responder) -> None:
        """Queue responses for the next requests, in order (a function answers one request)."""
        self._script.extend(responses)

    @property
    def unused(self) -> int:
        """How many scripted responses no request has taken yet."""
        return len(self._script)

    def message_requests(self) -> list[RecordedRequest]:
        """The ``POST /v1/messages`` requests so far."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/messages"]

    async def wait_for_requests(self, count: int) -> None:
        """Return once ``count`` message requests have arrived."""
        async with self._arrived:
            while len(self.message_requests()) < count:
                await self._arrived.wait()

    def _next(self, request: RecordedRequest) -> Response:
        entry = self._script.popleft() if self._script else self.default
        return entry(request) if callable(entry) else entry

    async def _record(self, request: RecordedRequest) -> None:
        self.requests.append(request)
        async with self._arrived:
            self._arrived.notify_all()

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection: one request, one response, then close (``connection: close``)."""
        try:
            head = await _read_request(stream)
            if head is None:
                return
            method, target, headers, raw = head
            path, _, query = target.partition("?")
            body = _parse_json(raw)
            now = trio.current_time()
            if method == "HEAD":
                await self._record(RecordedRequest(method, path, query, headers, body, now, "-"))
                await stream.send_all(_head(200, {"content-length": "0"}))
                return
            if method == "POST" and path == "/v1/messages":
                keys = (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
                if self.api_key is not None and self.api_key not in keys:
                    response: Response = HttpError(401, "invalid x-api-key")
                else:
                    response = self._next(RecordedRequest(method, path, query, headers, body, now, "-"))
                await self._record(
                    RecordedRequest(method, path, query, headers, body, now, type(response).__name__)
                )
                await _respond(stream, response, body if isinstance(body, dict) else {})
                return
            await self._record(RecordedRequest(method, path, query, headers, body, now, "-"))
            if method == "POST" and path == "/v1/messages/count_tokens":
                await _send_json(stream, 200, {"input_tokens": max(1, len(raw) // 4)})
            else:
                await _send_error(stream, HttpError(404, f"fake: no route for {method} {path}"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up first: nothing to answer
        finally:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_fake_anthropic(
    *, port: int = 0, default: Response | Responder | None = None, api_key: str | None = None
) -> AsyncIterator[FakeAnthropic]:
    """Serve a fake on 127.0.0.1 (``port`` 0: a free port) for the duration of the block.

    Leaving the block closes the listener and every open connection (stalled ones included).
    """
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(port, host=HOST)
        bound = listeners[0].socket.getsockname()[1]
        fake = FakeAnthropic(bound, default, api_key)
        await nursery.start(trio.serve_listeners, fake.handle, listeners)
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()


# --- HTTP/1.1, just enough ---------------------------------------------------------------------------


async def _read_request(stream: trio.SocketStream) -> tuple[str, str, dict[str, str], bytes] | None:
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            return None
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(stream, bytearray(rest))
    else:
        length = int(headers.get("content-length") or 0)
        body = bytearray(rest)
        while len(body) < length:
            chunk = await stream.receive_some(max(65536, length - len(body)))
            if not chunk:
                break
            body += chunk
    return method, target, headers, bytes(body)


async def _read_chunked(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    body = bytearray()

    async def fill(predicate: Callable[[], bool]) -> None:
        while not predicate():
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise trio.BrokenResourceError("eof inside a chunked body")
            buffer.extend(chunk)

    while True:
        await fill(lambda: b"\r\n" in buffer)
        size_line, _, _ = bytes(buffer).partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        del buffer[: len(size_line) + 2]
        wanted = size + 2
        await fill(lambda wanted=wanted: len(buffer) >= wanted)
        body += buffer[:size]
        del buffer[: size + 2]
        if size == 0:
            return bytes(body)


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [
        f"{k}: {v}" for k, v in {"connection": "close", "request-id": _id("req_fake_"), **headers}.items()
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_json(
    stream: trio.SocketStream, status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> None:
    data = _json(payload)
    head = _head(
        status, {"content-type": "application/json", "content-length": str(len(data)), **(headers or {})}
    )
    await stream.send_all(head + data)


async def _send_error(stream: trio.SocketStream, error: HttpError) -> None:
    error_type = error.error_type or _ERROR_TYPES.get(error.status, "api_error")
    payload = {
        "type": "error",
        "error": {"type": error_type, "message": error.message or f"fake {error.status}"},
        "request_id": _id("req_fake_"),
    }
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["retry-after"] = f"{error.retry_after:g}"
    await _send_json(stream, error.status, payload, headers)


async def _respond(stream: trio.SocketStream, response: Response, body: Mapping[str, Any]) -> None:
    model = body.get("model") if isinstance(body.get("model"), str) else "claude-fake"
    streaming = body.get("stream") is True
    match response:
        case HttpError():
            await _send_error(stream, response)
        case Reply():
            await trio.sleep(response.delay)
            if streaming:
                async with _ChunkedWriter(stream, response.write_size) as out:
                    await _stream_reply(out, response, response.model or model)
            else:
                await _send_json(stream, 200, _message(response, response.model or model))
        case ErrorMidStream():
            if not streaming:
                status = _STATUS_OF_TYPE.get(response.error_type, 500)
                await _send_error(stream, HttpError(status, response.message, response.error_type))
                return
            async with _ChunkedWriter(stream, None) as out:
                await _stream_partial(out, response.partial, model)
                error = {"type": response.error_type, "message": response.message}
                await out.event("error", {"type": "error", "error": error})
        case Disconnect():
            if response.partial is not None and streaming:
                out = _ChunkedWriter(stream, None)
                await out.start()
                await _stream_partial(out, response.partial, model)
                await out.flush()
            _reset(stream)
        case Stall():
            if response.partial is not None and streaming:
                out = _ChunkedWriter(stream, None)
                await out.start()
                await _stream_partial(out, response.partial, model)
                await out.flush()
            if response.seconds is None:
                await trio.sleep_forever()
            await trio.sleep(response.seconds)


class _ChunkedWriter:
    """Writes an SSE body with chunked transfer encoding, batching events into chunks."""

    def __init__(self, stream: trio.SocketStream, write_size: int | None) -> None:
        self.stream = stream
        self.write_size = write_size
        self.pending = bytearray()

    async def __aenter__(self) -> _ChunkedWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            await self.flush()
            await self.stream.send_all(b"0\r\n\r\n")

    async def start(self) -> None:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
        }
        await self.stream.send_all(_head(200, headers))

    async def event(self, name: str, data: Mapping[str, Any], gap: float = 0.0) -> None:
        self.pending += b"event: " + name.encode() + b"\ndata: " + _json(data) + b"\n\n"
        if gap > 0:
            await self.flush()
            await trio.sleep(gap)
        elif len(self.pending) >= _FLUSH_AT:
            await self.flush()

    async def flush(self) -> None:
        data, self.pending = bytes(self.pending), bytearray()
        step = self.write_size or len(data) or 1
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            await self.stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))


async def _stream_reply(out: _ChunkedWriter, reply: Reply, model: str) -> None:
    gap = reply.event_gap
    start = _message(reply, model, empty=True)
    await out.event("message_start", {"type": "message_start", "message": start}, gap)
    await out.event("ping", {"type": "ping"}, gap)
    for index, block in enumerate(reply.blocks):
        match block:
            case Text():
                await _block(
                    out, index, {"type": "text", "text": ""}, "text_delta", "text", block.pieces(), gap
                )
            case Thinking():
                pieces = Text(block.text, chunk_chars=block.chunk_chars).pieces()
                opening = {"type": "thinking", "thinking": "", "signature": ""}
                await _block(out, index, opening, "thinking_delta", "thinking", pieces, gap, stop=False)
                delta = {"type": "signature_delta", "signature": block.signature}
                await out.event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    gap,
                )
                await out.event("content_block_stop", {"type": "content_block_stop", "index": index}, gap)
            case ToolUse():
                opening = {"type": "tool_use", "id": _tool_id(block, index), "name": block.name, "input": {}}
                encoded = _json(block.input).decode()
                pieces = ["", *(encoded[i : i + 16] for i in range(0, len(encoded), 16))]
                await _block(out, index, opening, "input_json_delta", "partial_json", pieces, gap)
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
        "usage": {"output_tokens": reply.output_tokens()},
    }
    await out.event("message_delta", delta, gap)
    await out.event("message_stop", {"type": "message_stop"}, gap)


async def _block(
    out: _ChunkedWriter,
    index: int,
    opening: Mapping[str, Any],
    delta_type: str,
    field: str,
    pieces: list[str],
    gap: float,
    *,
    stop: bool = True,
) -> None:
    await out.event(
        "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}, gap
    )
    for piece in pieces:
        delta = {"type": delta_type, field: piece}
        await out.event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}, gap
        )
    if stop:
        await out.event("content_block_stop", {"type": "content_block_stop", "index": index}, gap)


async def _stream_partial(out: _ChunkedWriter, partial: str, model: str) -> None:
    """The opening of an answer that will break: message_start and part of a text block."""
    reply = Reply.text(partial)
    await out.event("message_start", {"type": "message_start", "message": _message(reply, model, empty=True)})
    await out.event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    for piece in Text(partial).pieces():
        delta = {"type": "text_delta", "text": piece}
        await out.event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})


def _message(reply: Reply, model: str, *, empty: bool = False) -> dict[str, Any]:
    """The Message object: complete (non-streaming answer) or as ``message_start`` carries it."""
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
                            "id": _tool_id(block, index),
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
        "id": _id("msg_fake_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None if empty else _stop_reason(reply),
        "stop_sequence": None,
        "usage": usage,
    }


def _stop_reason(reply: Reply) -> str:
    if reply.stop_reason is not None:
        return reply.stop_reason
    return "tool_use" if any(isinstance(b, ToolUse) for b in reply.blocks) else "end_turn"


def _tool_id(block: ToolUse, index: int) -> str:
    # Stable per block so the streamed and the JSON form of one reply agree.
    digest = hashlib.sha256(block.name.encode() + _json(block.input)).hexdigest()[:12]
    return block.id or f"toolu_fake_{index}_{digest}"


def _reset(stream: trio.SocketStream) -> None:
    """Make the coming close a TCP reset (SO_LINGER 0): the client sees ECONNRESET, not a clean end."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


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


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:16]


# --- standalone --------------------------------------------------------------------------------------


async def _serve(port: int, quiet: bool) -> None:
    def log_and_answer(request: RecordedRequest) -> Response:
        response = demo_reply(request)
        if not quiet:
            mode = "stream" if request.stream else "json"
            print(
                f"{request.method} {request.path} {mode} model={request.model} -> {type(response).__name__}",
                file=sys.stderr,
                flush=True,
            )
        return response

    async with open_fake_anthropic(port=port, default=log_and_answer) as fake:
        print(f"fake Anthropic API on {fake.base_url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        await trio.sleep_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Anthropic Messages API on 127.0.0.1 (demo replies).")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request")
    args = parser.parse_args(argv)
    try:
        trio.run(_serve, args.port, args.quiet)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
