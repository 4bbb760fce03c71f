"""What the HTTP API backends (``anthropic``, ``openai``) share: the API key, the connection
pool, and the attempt loop that turns one streamed response into events (the settings checks
are in :mod:`.preflight`).

Each backend supplies the request (a pure function of the job) and a decoder: a pure state
machine taking server-sent events and returning stream events (see :class:`StreamDecoder`).

Timeouts of an attempt and who enforces them:

``connect_timeout``      the pool: TCP, proxy tunnel and TLS handshake of a new connection
``first_event_timeout``  here: one cancel scope per attempt, lifted at the reply's first event
                         (text, thinking, a tool call; not the session's start), default 600 s
``timeouts.idle``        the runner's watchdog: no event for that long cancels the attempt; it
                         counts only after the first event, and any bytes from the server (SSE
                         keep-alive comments, Anthropic's ``ping``) restart it
``timeouts.attempt``     the runner: the whole attempt

Secrets: the key is read from the environment when the batch opens and kept in an
:class:`ApiKey`, whose ``repr`` and ``str`` hide it. It goes into one request header and nowhere
else; every error message passes through :meth:`ApiKey.redact` in case a server echoes it, and
the runner hides it again in everything the backend sends. Preflight (:mod:`.preflight`) refuses
a key with a control character, credentials, a key in the query or a fragment in ``base_url``,
and a key sent over plain ``http://`` to a host other than this machine unless
``allow_insecure_http = true``.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from orchestrator.backends.base import Emit
from orchestrator.backends.http.plain import Decompress, decompressor, is_event_stream, read_plain_body
from orchestrator.backends.http.ratelimit_headers import rate_limit_info
from orchestrator.backends.http.status import Redact, error_for_status
from orchestrator.errors import BackendError, ErrorKind, FatalError, RetryableError
from orchestrator.events import SessionStarted, StreamEvent, StreamWarning
from orchestrator.http import (
    ConnectError,
    ConnectionPool,
    ProxyConfig,
    Response,
    ServerSentEvent,
    SSEDecoder,
    SSEError,
    TransportError,
    client_ssl_context,
    open_pool,
)
from orchestrator.redact import Redactor
from orchestrator.resources import out_of_files_message
from orchestrator.run.watchdog import signs_of_life, wait_for_first_event

DONE_GRACE = 2.0
"""After the reply's end marker, how long to wait for the end of the HTTP body (normally it is
in the same read) before closing the connection instead of keeping it."""
ERROR_BODY_LIMIT = 64 * 1024
DEFAULT_CONCURRENCY = 64
"""Streams in flight per HTTP backend at the start unless its settings say otherwise: a streamed
reply costs about 25 us of CPU per event here, so 64 streams at 50 tokens/s use a tenth of a
core; the API's rate limits, not the client, are what a higher number runs into. From there the
runner raises it to what the rate limit times the observed latency calls for (Little's law), up
to :data:`DERIVED_CONCURRENCY_CEILING` and never above the batch's ``concurrency``."""
DERIVED_CONCURRENCY_CEILING = 1024
"""The most streams in flight the derived default reaches (one socket each)."""


class ApiKey:
    """An API key that does not show itself: ``repr``/``str`` say ``<redacted>``."""

    __slots__ = ("_redactor", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._redactor = Redactor([value])

    def reveal(self) -> str:
        """The key itself, for the one request header that carries it."""
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with the key (or a start or end of it cut by truncation) replaced; the runner
        hides it again in everything the backend sends (see :mod:`orchestrator.redact`)."""
        return self._redactor.text(text)

    def __repr__(self) -> str:
        return "ApiKey(<redacted>)"

    __str__ = __repr__


def redactor(key: ApiKey | None) -> Redact:
    """The function that hides ``key`` in a message (nothing to hide without a key)."""
    return key.redact if key is not None else _same


def _same(text: str) -> str:
    return text


class HttpSettings(Protocol):
    """The settings fields every HTTP backend has (each backend's ``Settings`` class).

    Read-only properties, so the frozen attrs classes match."""

    @property
    def base_url(self) -> str: ...
    @property
    def api_key_env(self) -> str: ...
    @property
    def api_key_required(self) -> bool: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def proxy(self) -> bool: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def first_event_timeout(self) -> float | None: ...


class StreamDecoder(Protocol):
    """A pure decoder of one attempt's server-sent events.

    ``feed`` returns the stream events one server event makes (raising RetryableError or
    FatalError for an error the server sent in the stream); ``done`` turns true at the reply's
    end marker, with the final events (usage, ``StreamFinished``) returned by that ``feed``;
    ``finish`` is called when the body ends before ``done`` and returns the final events of a
    reply that may end that way, or raises RetryableError for a cut stream. ``reply`` returns the
    events of a whole non-streamed reply (a server that ignored ``"stream": true``).
    """

    done: bool
    request_id: str | None
    """Set before the first ``feed``: the provider's id of the request, for ``SessionStarted``."""

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]: ...

    def reply(self, body: Mapping[str, Any]) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]: ...


def read_api_key(settings: HttpSettings, environ: Mapping[str, str] | None = None) -> ApiKey | None:
    env = os.environ if environ is None else environ
    value = env.get(settings.api_key_env, "").strip()
    return ApiKey(value) if value else None


@asynccontextmanager
async def open_http_pool(settings: HttpSettings) -> AsyncIterator[ConnectionPool]:
    """The batch's connection pool: TLS context, proxy from the environment when allowed."""
    context = client_ssl_context(settings.ca_file) if settings.base_url.startswith("https://") else None
    proxy = ProxyConfig.from_env() if settings.proxy else ProxyConfig()
    async with open_pool(context, proxy=proxy, connect_timeout=settings.connect_timeout) as pool:
        yield pool


async def stream_attempt(
    pool: ConnectionPool,
    url: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    decoder: StreamDecoder,
    emit: Emit,
    *,
    first_event_timeout: float | None,
    key: ApiKey | None,
    max_event_bytes: int = 1 << 20,
) -> None:
    """POST ``body`` to ``url`` and emit the events of the streamed reply (or of a whole JSON
    reply, when a server ignored ``"stream": true``: see :mod:`.plain`).

    Raises RetryableError or FatalError for every failure: an error status (with the server's
    message and Retry-After), an error in the stream, a refused or broken connection, a stream
    cut short, no event within ``first_event_timeout``. Cancellation (the runner's timeouts,
    Ctrl-C) closes the connection and emits nothing more.

    Rate-limit headers, when the response has any, become a ``RateLimitInfo`` emitted first: at
    the start of a streamed reply, and before the error is raised for any other status (a 429
    says how empty the quota is), so the runner paces the backend with them either way.
    """
    redact = redactor(key)
    headers = [*headers, (b"accept-encoding", b"identity")]  # see orchestrator.backends.http.plain
    waiting = trio.CancelScope(deadline=trio.current_time() + (first_event_timeout or math.inf))
    if first_event_timeout is not None:
        wait_for_first_event()  # until then, first_event_timeout is the only wait that counts
    finals: list[StreamEvent] = []
    try:
        with waiting:
            async with pool.open_stream("POST", url, headers=headers, body=body) as response:
                limits = rate_limit_info(response.headers, time.time())
                if limits is not None:
                    await emit(limits)
                    if first_event_timeout is not None:
                        wait_for_first_event()  # emit counted as an event for the idle watch
                decoder.request_id = request_id = _request_id(response)
                if response.status != 200:
                    raise await status_error(response, redact, request_id)
                decompress = decompressor(response.headers)
                if not is_event_stream(response.headers):
                    raw = await response.read_all(max_event_bytes)
                    plain = decompress(raw) if decompress is not None else raw
                    finals = read_plain_body(response.headers, plain, decoder, redact)
                else:
                    finals = await _read_stream(response, decoder, decompress, max_event_bytes, emit, waiting)
    except zlib.error as exc:
        raise FatalError(f"the compressed reply does not decode: {exc}", kind=ErrorKind.PROTOCOL) from None
    except TransportError as exc:
        raise _transport_failure(exc, redact) from None
    except SSEError as exc:
        # The same request gets the same event: asking again cannot help.
        raise FatalError(
            f"bad event stream: {exc} ({max_event_bytes} bytes; raise the backend's max_event_bytes)",
            kind=ErrorKind.PROTOCOL,
        ) from None
    if waiting.cancelled_caught:
        raise RetryableError(
            f"no event within {first_event_timeout:g}s of the request", kind=ErrorKind.TIMEOUT_FIRST_EVENT
        )
    for event in finals:
        await emit(event)


async def status_error(response: Response, redact: Redact, request_id: str | None = None) -> BackendError:
    """The error for ``response``, whose status is not a success: its body (up to
    :data:`ERROR_BODY_LIMIT`) read for the server's message; ``request_id`` ends the message."""
    raw = await response.read_all(ERROR_BODY_LIMIT)
    reason = response.reason.decode("latin-1", "replace")
    return error_for_status(
        response.status, reason, raw, response.headers, now=time.time(), redact=redact, request_id=request_id
    )


def _request_id(response: Response) -> str | None:
    """The provider's id of the request: Anthropic's ``request-id``, OpenAI's ``x-request-id``."""
    raw = response.header(b"request-id") or response.header(b"x-request-id")
    text = raw.decode("latin-1", "replace").strip()[:200] if raw else ""
    return text if text.isprintable() and text else None


_NOT_PROGRESS = (SessionStarted, StreamWarning)


async def _read_stream(
    response: Response,
    decoder: StreamDecoder,
    decompress: Decompress | None,
    max_event_bytes: int,
    emit: Emit,
    waiting: trio.CancelScope,
) -> list[StreamEvent]:
    """Emit the events of an event-stream body as they come; return the final events of a body
    that ended before the decoder's end marker.

    The first event of the reply itself (not the session's start or a warning) lifts ``waiting``
    and lets the idle watch count; any bytes at all (keep-alive comments, pings) are signs of
    life for it."""
    sse = SSEDecoder(max_event_bytes)
    feed = decoder.feed
    first = waiting.deadline != math.inf
    while not decoder.done and (data := await response.receive_some()):
        signs_of_life()
        if decompress is not None:
            data = decompress(data)
        for server_event in sse.feed(data):
            events = feed(server_event)
            for event in events:
                await emit(event)
            if first and events:
                if any(not isinstance(event, _NOT_PROGRESS) for event in events):
                    first = False
                    waiting.deadline = math.inf
                else:
                    wait_for_first_event()  # emit counted the session's start as an event
            if decoder.done:
                break
    if decoder.done:
        await _read_to_end(response)
        return []
    return decoder.finish()


async def _read_to_end(response: Response) -> None:
    """Let the body end so the connection can be kept; a server that keeps it open after the
    end marker costs only this connection (the pool closes an unfinished one)."""
    if response.complete:
        return
    with trio.move_on_after(DONE_GRACE):
        try:
            while await response.receive_some():
                pass
        except TransportError:
            pass  # the reply is complete; only the connection is lost


def _transport_failure(exc: TransportError, redact: Redact) -> RetryableError | FatalError:
    message = redact(str(exc))
    if isinstance(exc, ConnectError):
        if exc.certificate:
            return FatalError(f"TLS certificate not trusted: {message}", kind=ErrorKind.TLS)
        if exc.out_of_files:
            return RetryableError(out_of_files_message(message), kind=ErrorKind.RESOURCES)
        return RetryableError(f"cannot connect: {message}", kind=ErrorKind.CONNECT)
    return RetryableError(message, kind=ErrorKind.CONNECTION)
