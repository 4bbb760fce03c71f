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

This module is the server; the responses and recorded requests are defined in
:mod:`.script` (and importable from here), their bytes on the wire in
:mod:`.wire`.

Rate limits (optional, ``limits=AnthropicLimits(rpm, input_tpm, output_tpm)``): requests,
uncached input tokens and output tokens are metered apart, as the API meters them
(:mod:`.limits`); every reply carries the ``anthropic-ratelimit-*`` headers and a request over a
limit gets a 429 ``rate_limit_error`` while its scripted response waits for the next request.

Run it alone for demos (``orchestrate jobs/claude.toml``) with the :func:`demo_reply` responder::

    python -m orchestrator.testing.anthropic --port 8765
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio

from orchestrator.testing.anthropic import wire
from orchestrator.testing.anthropic.limits import AnthropicLimits, Charge, Meter
from orchestrator.testing.anthropic.script import (
    Block,
    Disconnect,
    ErrorMidStream,
    HttpError,
    RecordedRequest,
    Reply,
    Responder,
    Response,
    Stall,
    Text,
    Thinking,
    ToolUse,
    Usage,
    cache_problem,
    demo_reply,
    output_format_problem,
    script_exhausted,
)
from orchestrator.testing.http11 import read_request, reset
from orchestrator.testing.raw import Raw, send_raw

__all__ = [
    "HOST",
    "AnthropicLimits",
    "Block",
    "Disconnect",
    "ErrorMidStream",
    "FakeAnthropic",
    "HttpError",
    "Raw",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Response",
    "Stall",
    "Text",
    "Thinking",
    "ToolUse",
    "Usage",
    "demo_reply",
    "main",
    "open_fake_anthropic",
    "script_exhausted",
]

HOST = "127.0.0.1"
_FLUSH_AT = 64 * 1024
"""Streamed events are batched into HTTP chunks of about this size (unless an event gap or
``write_size`` asks for smaller writes): a multi-megabyte reply is not a million tiny writes."""


class FakeAnthropic:
    """A running fake; see the module docstring. Not thread-safe: use it from its trio run."""

    def __init__(
        self,
        port: int,
        default: Response | Responder | None,
        api_key: str | None,
        limits: AnthropicLimits | None = None,
    ) -> None:
        self.port = port
        self.default: Response | Responder = default if default is not None else script_exhausted
        self.api_key = api_key
        """When set, a request without this key (``x-api-key`` or ``authorization: Bearer``) gets a
        401, and takes nothing from the script."""
        self.requests: list[RecordedRequest] = []
        self._script: deque[Response | Responder] = deque()
        self._arrived = trio.Condition()
        self.meter = Meter(limits, trio.current_time()) if limits is not None else None
        """The rate limits' buckets and counts (``meter.refused``: 429s sent), if limited."""

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
        """Return once ``count`` message requests have arrived. Cancellable: nothing is lost."""
        async with self._arrived:
            while len(self.message_requests()) < count:
                await self._arrived.wait()

    def _next(self, request: RecordedRequest) -> tuple[Response, dict[str, str]]:
        """The response to a message request and the rate-limit headers to send with it. A
        request over the limits gets a 429 and leaves the script as it was."""
        entry = self._script[0] if self._script else self.default
        response = entry(request) if callable(entry) else entry
        headers: dict[str, str] = {}
        if self.meter is not None and isinstance(response, Reply):
            admission = self.meter.admit(trio.current_time(), _charge(request.body, response), time.time())
            headers = admission.headers
            if admission.retry_after is not None:
                message = f"This request would exceed your rate limit of {admission.refused_by} per minute"
                error = HttpError(429, message, "rate_limit_error", math.ceil(admission.retry_after), headers)
                return error, headers
        if self._script:
            self._script.popleft()
        return response, headers

    async def _record(self, request: RecordedRequest) -> None:
        self.requests.append(request)
        async with self._arrived:
            self._arrived.notify_all()

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection: one request, one response, then close (``connection: close``).

        The request is recorded before it is answered. A client that hangs up first ends this
        quietly; cancellation (the fake closing) closes the connection at once, mid-answer or not.
        """
        try:
            request = await read_request(stream)
            if request is None:
                return
            method, path, query, headers = request.method, request.path, request.query, request.headers
            body = _parse_json(request.body)
            now = trio.current_time()
            if method == "HEAD":
                await self._record(RecordedRequest(method, path, query, headers, body, now, "-"))
                await stream.send_all(wire.response_head(200, {"content-length": "0"}))
                return
            if method == "POST" and path == "/v1/messages":
                keys = (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
                problem = cache_problem(body) or output_format_problem(body)
                extra: dict[str, str] = {}
                if self.api_key is not None and self.api_key not in keys:
                    response: Response = HttpError(401, "invalid x-api-key")
                elif problem is not None:  # as the API does: refused before any token is used
                    response = HttpError(400, problem)
                else:
                    asked = RecordedRequest(method, path, query, headers, body, now, "-")
                    response, extra = self._next(asked)
                await self._record(
                    RecordedRequest(method, path, query, headers, body, now, type(response).__name__)
                )
                await _respond(stream, response, body if isinstance(body, dict) else {}, extra)
                if self.meter is not None and isinstance(response, Reply):
                    charge = _charge(body, response)
                    self.meter.settle(trio.current_time(), charge.max_tokens, response.output_tokens())
                return
            await self._record(RecordedRequest(method, path, query, headers, body, now, "-"))
            if method == "POST" and path == "/v1/messages/count_tokens":
                counted = max(1, len(request.body) // 4)
                await stream.send_all(wire.json_response(200, {"input_tokens": counted}))
            else:
                await stream.send_all(
                    wire.error_response(HttpError(404, f"fake: no route for {method} {path}"))
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up first: nothing to answer
        finally:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_fake_anthropic(
    *,
    port: int = 0,
    default: Response | Responder | None = None,
    api_key: str | None = None,
    limits: AnthropicLimits | None = None,
) -> AsyncIterator[FakeAnthropic]:
    """Serve a fake on 127.0.0.1 (``port`` 0: a free port) for the duration of the block;
    ``limits``: rate limits, buckets full at the start.

    Leaving the block, normally or by cancellation, closes the listener and every open
    connection (stalled ones included) before it returns: no task outlives the block.
    """
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(port, host=HOST)
        bound = listeners[0].socket.getsockname()[1]
        fake = FakeAnthropic(bound, default, api_key, limits)
        await nursery.start(trio.serve_listeners, fake.handle, listeners)
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()


# --- answering ----------------------------------------------------------------------------------------


def _charge(body: Any, reply: Reply) -> Charge:
    """What a request that gets ``reply`` costs the meter: the input its usage reports and the
    budget it asked for (the reply's own length when it names none)."""
    budget = body.get("max_tokens") if isinstance(body, dict) else None
    if not isinstance(budget, int) or isinstance(budget, bool):
        budget = reply.output_tokens()
    used = reply.usage
    return Charge(used.input_tokens, used.cache_read_input_tokens, used.cache_creation_input_tokens, budget)


async def _respond(
    stream: trio.SocketStream, response: Response, body: Mapping[str, Any], extra: Mapping[str, str]
) -> None:
    """Answer one message request (``extra``: more headers for a reply)."""
    requested = body.get("model")
    model = requested if isinstance(requested, str) else "claude-fake"
    streaming = body.get("stream") is True
    match response:
        case HttpError():
            await stream.send_all(wire.error_response(response))
        case Reply():
            await trio.sleep(response.delay)
            if streaming:
                async with _ChunkedWriter(stream, response.write_size, extra) as out:
                    for name, data in wire.reply_events(response, response.model or model):
                        await out.event(name, data, response.event_gap)
            else:
                await stream.send_all(
                    wire.json_response(200, wire.message(response, response.model or model), extra)
                )
        case ErrorMidStream():
            if not streaming:
                status = wire.STATUS_OF_ERROR_TYPE.get(response.error_type, 500)
                await stream.send_all(
                    wire.error_response(HttpError(status, response.message, response.error_type))
                )
                return
            async with _ChunkedWriter(stream, None) as out:
                for name, data in wire.partial_events(response.partial, model):
                    await out.event(name, data)
                await out.event(*wire.error_event(response.error_type, response.message))
        case Disconnect():
            if response.partial is not None and streaming:
                await _send_partial(stream, response.partial, model)
            reset(stream)
        case Raw():
            await send_raw(stream, response)
        case Stall():
            if response.partial is not None and streaming:
                await _send_partial(stream, response.partial, model)
            if response.seconds is None:
                await trio.sleep_forever()
            await trio.sleep(response.seconds)


async def _send_partial(stream: trio.SocketStream, partial: str, model: str) -> None:
    """The head and the opening events of an answer that will never end (no last chunk)."""
    out = _ChunkedWriter(stream, None)
    await out.start()
    for name, data in wire.partial_events(partial, model):
        await out.event(name, data)
    await out.flush()


class _ChunkedWriter:
    """Writes an SSE body with chunked transfer encoding, batching events into chunks.

    As a context manager it sends the head on entry and, when the block ends without an
    exception, the rest of the events and the last chunk; after an exception the body stays
    unfinished, as a server that broke off would leave it.
    """

    def __init__(
        self, stream: trio.SocketStream, write_size: int | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.stream = stream
        self.write_size = write_size
        self.headers = {**wire.SSE_HEADERS, **(headers or {})}
        self.pending = bytearray()

    async def __aenter__(self) -> _ChunkedWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            await self.flush()
            await self.stream.send_all(wire.LAST_CHUNK)

    async def start(self) -> None:
        await self.stream.send_all(wire.response_head(200, self.headers))

    async def event(self, name: str, data: Mapping[str, Any], gap: float = 0.0) -> None:
        """Queue one event; with a ``gap``, send what is queued and wait that long after it."""
        self.pending += wire.sse(name, data)
        if gap > 0:
            await self.flush()
            await trio.sleep(gap)
        elif len(self.pending) >= _FLUSH_AT:
            await self.flush()

    async def flush(self) -> None:
        data, self.pending = bytes(self.pending), bytearray()
        step = self.write_size or len(data) or 1
        for i in range(0, len(data), step):
            await self.stream.send_all(wire.chunk(data[i : i + step]))


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


# --- standalone ------------------------------------------------------------------------------------------


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
    """``python -m orchestrator.testing.anthropic``: serve the demo fake until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.testing.anthropic",
        description="A fake Anthropic Messages API on 127.0.0.1 (demo replies).",
    )
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request")
    args = parser.parse_args(argv)
    try:
        trio.run(_serve, args.port, args.quiet)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
