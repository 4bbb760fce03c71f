"""A fake OpenAI-compatible chat-completions API on 127.0.0.1, scripted per request.

It speaks the real wire format of ``POST /v1/chat/completions``: HTTP/1.1 keep-alive, chunked
server-sent events (``chat.completion.chunk`` objects, the usage chunk with empty ``choices``
when the request asks for it, ``data: [DONE]``), JSON error bodies with their statuses and
``retry-after``/``retry-after-ms`` headers. TLS is optional (a trustme certificate for
127.0.0.1; the CA is ``fake.ca_file``). Every request is kept in ``fake.requests``.

Use it inside a trio test::

    async with open_fake_openai() as fake:
        fake.script(HttpError(429, retry_after=1), Reply("Hello!"))
        ...  # point the client at fake.base_url

Each request takes the next scripted response; when the script is empty it gets
``fake.default`` (a response, or a function of the request returning one; by default a 500
saying the script ran out). Responses: :class:`Reply`, :class:`HttpError`,
:class:`ErrorMidStream`, :class:`Disconnect` (reset after part of the reply) and :class:`Stall`
(silence after part of the reply). Run it alone, answering every prompt, for demos::

    python -m tests.fakes.openai_api --port 8766
"""

from __future__ import annotations

import argparse
import math
import socket
import ssl
import struct
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from .openai_wire import partial_events, reply_events, sse

HOST = "127.0.0.1"
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded"}


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

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        n = max(1, self.chunk_chars)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)]


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


Response = Reply | HttpError | ErrorMidStream | Disconnect | Stall


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


Responder = Callable[[RecordedRequest], Response]


def script_exhausted(request: RecordedRequest) -> Response:
    return HttpError(500, "fake: no scripted response left for this request", type="server_error")


def demo_reply(request: RecordedRequest) -> Response:
    """Answers any prompt with a short text quoting it (for demos)."""
    first = (request.prompt.strip().splitlines() or ["(empty prompt)"])[0][:200]
    return Reply(f"This is a fake reply to: {first}", event_gap=0.01)


class FakeOpenAI:
    """A running fake; see the module docstring. Use it from its trio run only."""

    def __init__(self, port: int, default: Response | Responder | None, ca_file: str | None) -> None:
        self.port = port
        self.default: Response | Responder = default if default is not None else script_exhausted
        self.ca_file = ca_file
        self.requests: list[RecordedRequest] = []
        self.connections = 0
        """Connections accepted so far."""
        self.open_connections = 0
        """Connections not yet closed (0 once every client has hung up)."""
        self.peak_connections = 0
        """The most connections open at once."""
        self._script: deque[Response | Responder] = deque()
        self._hold = 0
        self._all_arrived = trio.Event()

    def hold_until(self, count: int) -> None:
        """Answer no request before ``count`` requests have arrived (proves they are concurrent:
        fewer in flight at once would wait for ever)."""
        self._hold = count

    @property
    def base_url(self) -> str:
        """What ``[backends.openai] base_url`` should say."""
        return f"{'https' if self.ca_file else 'http'}://{HOST}:{self.port}/v1"

    def script(self, *responses: Response | Responder) -> None:
        self._script.extend(responses)

    def _next(self, request: RecordedRequest) -> Response:
        entry = self._script.popleft() if self._script else self.default
        return entry(request) if callable(entry) else entry

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve requests on one connection until either side closes it."""
        self.connections += 1
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        buffer = bytearray()
        try:
            while True:
                request = await _read_request(stream, buffer)
                if request is None:
                    return
                method, path, headers, raw = request
                body = orjson.loads(raw) if raw else None
                if method == "POST" and path == "/v1/chat/completions":
                    response = self._next(RecordedRequest(method, path, headers, body, "-"))
                else:
                    response = HttpError(404, f"fake: no route for {method} {path}", type="not_found")
                self.requests.append(RecordedRequest(method, path, headers, body, type(response).__name__))
                if len(self.requests) >= self._hold:
                    self._all_arrived.set()
                await self._all_arrived.wait()
                if not await _respond(stream, response, body if isinstance(body, dict) else {}):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_fake_openai(
    *, port: int = 0, tls: bool = False, default: Response | Responder | None = None
) -> AsyncIterator[FakeOpenAI]:
    """Serve a fake on 127.0.0.1 for the block (``port`` 0: a free port; ``tls``: HTTPS with a
    trustme CA in ``fake.ca_file``). Leaving the block closes every connection."""
    with tempfile.TemporaryDirectory() as tmp:
        context = _server_context(Path(tmp)) if tls else None
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(port, host=HOST, backlog=4096)
            fake = FakeOpenAI(
                listeners[0].socket.getsockname()[1], default, str(Path(tmp) / "ca.pem") if tls else None
            )

            async def serve(stream: trio.SocketStream) -> None:
                if context is None:
                    await fake.handle(stream)
                else:
                    await fake.handle(trio.SSLStream(stream, context, server_side=True))

            await nursery.start(trio.serve_listeners, serve, listeners)
            try:
                yield fake
            finally:
                nursery.cancel_scope.cancel()


def _server_context(directory: Path) -> ssl.SSLContext:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(context)
    return context


async def _read_request(
    stream: trio.abc.Stream, buffer: bytearray
) -> tuple[str, str, dict[str, str], bytes] | None:
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    end = buffer.index(b"\r\n\r\n")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    del buffer[: end + 4]
    while len(buffer) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    return method, target.partition("?")[0], headers, body


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_SSE_HEAD = {"content-type": "text/event-stream", "cache-control": "no-cache", "transfer-encoding": "chunked"}


async def _respond(stream: trio.abc.Stream, response: Response, request: Mapping[str, Any]) -> bool:
    """Answer one request; False when the connection must end afterwards."""
    model = request.get("model") if isinstance(request.get("model"), str) else "fake-model"
    wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    match response:
        case HttpError():
            await _send_error(stream, response)
            return True
        case Reply():
            await stream.send_all(_head(200, _SSE_HEAD))
            events = reply_events(response, response.model or model, wants_usage)
            await _send_events(stream, events, response.event_gap, response.write_size, last=True)
            return True
        case ErrorMidStream():
            await stream.send_all(_head(200, _SSE_HEAD))
            error = {
                "error": {"message": response.message, "type": response.type, "param": None, "code": None}
            }
            events = [*partial_events(response.partial, model), sse(error)]
            await _send_events(stream, events, 0.0, None, last=True)
            return True
        case Disconnect():
            if response.partial is not None:
                await stream.send_all(_head(200, _SSE_HEAD))
                await _send_events(stream, partial_events(response.partial, model), 0.0, None)
            _reset(stream)
            return False
        case Stall():
            if response.partial is not None:
                await stream.send_all(_head(200, _SSE_HEAD))
                await _send_events(stream, partial_events(response.partial, model), 0.0, None)
            await trio.sleep(math.inf if response.seconds is None else response.seconds)
            return False


async def _send_error(stream: trio.abc.Stream, error: HttpError) -> None:
    body = error.body
    if body is None:
        kind = error.type or _ERROR_TYPES.get(error.status, "server_error")
        payload = {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}
        body = orjson.dumps(payload)
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    if error.retry_after is not None:
        value = error.retry_after
        headers["retry-after"] = f"{value:g}" if isinstance(value, int | float) else value
    if error.retry_after_ms is not None:
        headers["retry-after-ms"] = f"{error.retry_after_ms:g}"
    await stream.send_all(_head(error.status, headers) + body)


async def _send_events(
    stream: trio.abc.Stream, events: list[bytes], gap: float, write_size: int | None, *, last: bool = False
) -> None:
    """Each event as an HTTP chunk (or ``write_size`` pieces of the whole); ``last`` adds the final
    chunk to the last write, as servers that flush once per event do. No gap: one write."""
    if write_size is not None:
        data = b"".join(events)
        events = [data[i : i + write_size] for i in range(0, len(data), write_size)]
    framed = [b"%x\r\n%s\r\n" % (len(event), event) for event in events]
    if last:
        framed.append(b"0\r\n\r\n")
    if not gap:
        await stream.send_all(b"".join(framed))
        return
    if last:
        framed[-2:] = [framed[-2] + framed[-1]]
    for piece in framed:
        await stream.send_all(piece)
        await trio.sleep(gap)


def _reset(stream: trio.abc.Stream) -> None:
    """Make the coming close a TCP reset: the client sees ECONNRESET, not a clean end."""
    raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(raw, trio.SocketStream):
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _serve(port: int, quiet: bool) -> None:
    def answer(request: RecordedRequest) -> Response:
        if not quiet:
            print(f"POST /v1/chat/completions model={request.body.get('model')}", file=sys.stderr, flush=True)
        return demo_reply(request)

    async with open_fake_openai(port=port, default=answer) as fake:
        print(f"fake OpenAI API on {fake.base_url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        await trio.sleep_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI chat-completions API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8766, help="port to listen on (0: any free port)")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request")
    args = parser.parse_args(argv)
    try:
        trio.run(_serve, args.port, args.quiet)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
