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
(silence after part of the reply); they live in :mod:`.script` and are re-exported here.

Rate limits (optional, ``limits=RateLimits(rpm, tpm, window)``): requests and tokens are
metered with token buckets (:mod:`.limits`). Like OpenAI, a request is charged when it
arrives: its prompt (guessed from its characters) plus the completion budget it asks for
(``max_tokens`` or ``max_completion_tokens``; the reply's own length when it names none), and an
unused budget is not given back. Every chat response carries the
``x-ratelimit-*`` headers, and a request over a limit gets OpenAI's 429 (``retry-after`` in
whole seconds, ``retry-after-ms`` exact) while its scripted response waits for the next request.

Run it alone, answering every prompt, for demos and benchmarks::

    python -m orchestrator.testing.openai --port 8766 [--rpm 600 --tpm 60000 --window 6 --latency 0.5]

``--fixed`` meters fixed windows of ``--window`` seconds instead of buckets; ``--fail 0.05`` answers
that share of requests with a 500 and ``--stall 0.01`` that share with a stream that goes silent
after its first words (drawn with ``--seed``).
"""

from __future__ import annotations

import argparse
import math
import random
import ssl
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from orchestrator.testing.http11 import read_request, reset
from orchestrator.testing.openai.limits import Meter, RateLimits
from orchestrator.testing.openai.script import (
    Disconnect,
    ErrorMidStream,
    HttpError,
    RecordedRequest,
    Reply,
    Responder,
    Response,
    Stall,
    Tool,
    demo_reply,
    response_format_problem,
    script_exhausted,
    timed_reply,
)
from orchestrator.testing.openai.wire import partial_events, reply_events, sse
from orchestrator.testing.raw import Raw, send_raw

__all__ = [
    "Disconnect",
    "ErrorMidStream",
    "FakeOpenAI",
    "HttpError",
    "RateLimits",
    "Raw",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Response",
    "Stall",
    "Tool",
    "demo_reply",
    "open_fake_openai",
    "script_exhausted",
    "timed_reply",
]

HOST = "127.0.0.1"
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded"}


def _charged_tokens(request: RecordedRequest, response: Response) -> int:
    """What OpenAI's token limit charges a request on arrival: the prompt, guessed from its
    characters (about four a token, not tokenized), plus the completion budget it asks for."""
    if not isinstance(response, Reply):
        return 0
    body = request.body if isinstance(request.body, dict) else {}
    budget = body.get("max_completion_tokens", body.get("max_tokens"))
    if not isinstance(budget, int) or isinstance(budget, bool):
        return response.tokens()
    messages = body.get("messages", [])
    chars = sum(
        len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)
    )
    return max(1, chars // 4) + budget


class FakeOpenAI:
    """A running fake; see the module docstring. Use it from its trio run only."""

    def __init__(
        self,
        port: int,
        default: Response | Responder | None,
        ca_file: str | None,
        limits: RateLimits | None = None,
    ) -> None:
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
        self.meter = Meter(limits, trio.current_time()) if limits is not None else None
        """The rate limits' buckets and counts (``meter.refused``: 429s sent), if limited."""
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

    def _next(self, request: RecordedRequest) -> tuple[Response, dict[str, str]]:
        """The response to a chat request and the rate-limit headers to send with it. A request
        over the limits gets a 429 and leaves the script as it was (a responder is still called)."""
        entry = self._script[0] if self._script else self.default
        response = entry(request) if callable(entry) else entry
        headers: dict[str, str] = {}
        if self.meter is not None:
            tokens = _charged_tokens(request, response)
            model = request.body.get("model") if isinstance(request.body, dict) else None
            admission = self.meter.admit(trio.current_time(), tokens, str(model or "fake-model"))
            headers = admission.headers
            if admission.retry_after is not None:
                wait = admission.retry_after
                error = HttpError(
                    429, admission.message, type=admission.refused_by, code="rate_limit_exceeded"
                )
                return attrs.evolve(error, retry_after=math.ceil(wait), retry_after_ms=wait * 1000), headers
        if self._script:
            self._script.popleft()
        return response, headers

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve requests on one connection until either side closes it."""
        self.connections += 1
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        buffer = bytearray()
        try:
            while True:
                request = await read_request(stream, buffer)
                if request is None:
                    return
                method, path, headers = request.method, request.path, request.headers
                body = orjson.loads(request.body) if request.body else None
                extra: dict[str, str] = {}
                problem = response_format_problem(body)
                response: Response
                if method == "POST" and path == "/v1/chat/completions" and problem is not None:
                    response = HttpError(400, problem, type="invalid_request_error")  # before any token
                elif method == "POST" and path == "/v1/chat/completions":
                    response, extra = self._next(RecordedRequest(method, path, headers, body, "-"))
                else:
                    response = HttpError(404, f"fake: no route for {method} {path}", type="not_found")
                self.requests.append(RecordedRequest(method, path, headers, body, type(response).__name__))
                if len(self.requests) >= self._hold:
                    self._all_arrived.set()
                await self._all_arrived.wait()
                if not await _respond(stream, response, body if isinstance(body, dict) else {}, extra):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_fake_openai(
    *,
    port: int = 0,
    tls: bool = False,
    default: Response | Responder | None = None,
    limits: RateLimits | None = None,
) -> AsyncIterator[FakeOpenAI]:
    """Serve a fake on 127.0.0.1 for the block (``port`` 0: a free port; ``tls``: HTTPS with a
    trustme CA in ``fake.ca_file``; ``limits``: rate limits, buckets full at the start).
    Leaving the block closes every connection."""
    with tempfile.TemporaryDirectory() as tmp:
        context = _server_context(Path(tmp)) if tls else None
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(port, host=HOST, backlog=4096)
            ca_file = str(Path(tmp) / "ca.pem") if tls else None
            fake = FakeOpenAI(listeners[0].socket.getsockname()[1], default, ca_file, limits)

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


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_SSE_HEAD = {"content-type": "text/event-stream", "cache-control": "no-cache", "transfer-encoding": "chunked"}


async def _respond(
    stream: trio.abc.Stream, response: Response, request: Mapping[str, Any], extra: Mapping[str, str]
) -> bool:
    """Answer one request (``extra``: more headers); False when the connection must end."""
    asked = request.get("model")
    model = asked if isinstance(asked, str) else "fake-model"
    wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    match response:
        case HttpError():
            await _send_error(stream, response, extra)
            return True
        case Reply():
            await trio.sleep(response.delay)
            await stream.send_all(_head(200, {**_SSE_HEAD, **extra}))
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
            reset(stream)
            return False
        case Raw():
            await send_raw(stream, response)
            return True
        case Stall():
            if response.partial is not None:
                await stream.send_all(_head(200, _SSE_HEAD))
                await _send_events(stream, partial_events(response.partial, model), 0.0, None)
            await trio.sleep(math.inf if response.seconds is None else response.seconds)
            return False


async def _send_error(stream: trio.abc.Stream, error: HttpError, extra: Mapping[str, str]) -> None:
    body = error.body
    if body is None:
        kind = error.type or _ERROR_TYPES.get(error.status, "server_error")
        payload = {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}
        body = orjson.dumps(payload)
    headers = {"content-type": "application/json", "content-length": str(len(body)), **extra}
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


async def _serve(args: argparse.Namespace) -> None:
    reply = timed_reply(args.words, args.latency) if args.latency is not None else demo_reply
    chance = random.Random(args.seed)

    def answer(request: RecordedRequest) -> Response:
        if not args.quiet:
            print(f"POST /v1/chat/completions model={request.body.get('model')}", file=sys.stderr, flush=True)
        draw = chance.random()
        if draw < args.fail:
            return HttpError(500, "The server had an error while processing your request.")
        if draw < args.fail + args.stall:
            return Stall(seconds=300.0)
        return reply(request)

    limited = args.rpm or args.tpm
    limits = RateLimits(args.rpm, args.tpm, args.window, args.fixed) if limited else None
    async with open_fake_openai(port=args.port, default=answer, limits=limits) as fake:
        print(f"fake OpenAI API on {fake.base_url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        await trio.sleep_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.testing.openai",
        description="A fake OpenAI chat-completions API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=8766, help="port to listen on (0: any free port)")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request")
    parser.add_argument("--rpm", type=float, help="requests per minute (429 over it)")
    parser.add_argument("--tpm", type=float, help="tokens per minute (429 over it)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds' worth a bucket holds")
    parser.add_argument("--fixed", action="store_true", help="fixed windows of --window seconds, not buckets")
    parser.add_argument("--fail", type=float, default=0.0, help="share of requests answered with a 500")
    parser.add_argument("--stall", type=float, default=0.0, help="share of replies that stall after a word")
    parser.add_argument("--seed", type=int, default=0, help="seed for --fail and --stall")
    parser.add_argument("--latency", type=float, help="answer every prompt after this many seconds")
    parser.add_argument("--words", type=int, default=20, help="words in a --latency answer")
    args = parser.parse_args(argv)
    try:
        trio.run(_serve, args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
