"""What both batch backends share: calls to the control endpoints, and the backend that hands
each attempt to the :class:`~.collector.Collector` and replays its result as stream events.

Timeouts: an attempt of a batch backend waits hours for its result in silence, so the runner
does not apply ``timeouts.idle`` and ``timeouts.attempt`` to it (``waits_for_results``); the job
timeout still applies.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import trio

from orchestrator.backends.base import Emit, EmitBatch
from orchestrator.backends.http.backend import Headers, HttpApi, HttpBackend, HttpKind
from orchestrator.backends.http.batch.collector import Chunking, Collector, Polling
from orchestrator.backends.http.batch.left import custom_id, left_in
from orchestrator.backends.http.batch.provider import LostCreate, RemoteBatches
from orchestrator.backends.http.batch.replay import replay
from orchestrator.backends.http.exchange import (
    ApiKey,
    _transport_failure,
    open_http_pool,
    read_api_key,
    redactor,
    status_error,
)
from orchestrator.backends.status import is_context_length, kind_for
from orchestrator.errors import BackendError, ErrorKind, FatalError, RetryableError, error_for
from orchestrator.events import (
    BatchProgress,
    BatchStopped,
    BatchSubmitted,
    BatchSubmitting,
    StreamWarning,
)
from orchestrator.http import ConnectionPool, ServerSentEvent, TransportError
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec


@attrs.frozen(slots=False)  # a mixin beside the streaming twin's slotted settings
class BatchSettings:
    """The batch settings both batch backends add to their streaming twin's (the APIs' own limits
    are checked at preflight: ``batch_requests`` and ``batch_bytes`` may not pass them)."""

    batch_requests: int = attrs.field(default=10_000, metadata={"min": 1})
    """Requests per remote batch at most."""
    batch_bytes: int = attrs.field(default=100_000_000, metadata={"min": 1})
    """Bytes of requests per remote batch at most."""
    batch_linger: float = attrs.field(default=10.0, metadata={"min": 0})
    """Seconds a request waits for others to join its batch before the batch goes."""
    poll_min: float = attrs.field(default=2.0, metadata={"gt": 0})
    """Seconds to the first poll of a batch; each next poll waits longer, up to ``poll_max``."""
    poll_max: float = attrs.field(default=60.0, metadata={"gt": 0})
    control_timeout: float = attrs.field(default=60.0, metadata={"gt": 0})
    """Seconds a control call (upload, create, poll, list, cancel, a results download) waits
    for its answer to start, and then between any two pieces of it (a request body adds a second
    per megabyte to the first wait). A create call that times out is in doubt: its batch is
    looked for before its requests are sent again; other calls are asked again later."""
    cancel_remote: bool = False
    """On a stop (Ctrl-C, SIGTERM, deadline, hard cap), cancel the remote batches still running
    instead of leaving them for ``--resume`` to collect (``--cancel-remote``)."""


DEFAULT_CONCURRENCY = 100_000
"""A waiting batch attempt is a sleeping task and no connection: the cap that matters is the
batch's own ``concurrency``, which batch runs should raise (see the README)."""

_REMOTE_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def remote_id(answer: Any) -> str:
    """The ``id`` of a created batch or file; only a plain id goes into the URLs that follow."""
    value = answer.get("id") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not _REMOTE_ID.fullmatch(value):
        raise RetryableError("the batch API answered without a usable id", kind=ErrorKind.PROTOCOL)
    return value


class Control:
    """Calls to one provider's control endpoints with the batch's pool, headers and key. Each
    call gives up after ``timeout`` seconds without an answer (see ``control_timeout``)."""

    def __init__(
        self, pool: ConnectionPool, headers: Headers, key: ApiKey | None, timeout: float = 60.0
    ) -> None:
        self.pool = pool
        self.headers = headers
        self.redact = redactor(key)
        self.timeout = timeout

    async def call(
        self, method: str, url: str, body: bytes = b"", *, content_type: bytes = b"application/json"
    ) -> Any:
        """The JSON answer of a control endpoint; RetryableError/FatalError for a failure."""
        chunks: list[bytes] = []
        await self.each_chunk(method, url, body, content_type, chunks.append)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise error_for(ErrorKind.PROTOCOL, f"{method} {url}: the answer is not JSON") from None

    async def each_line(self, url: str, take: Callable[[bytes], None]) -> None:
        """Hand every non-empty line of a JSONL download to ``take``, as it arrives."""
        rest = bytearray()

        def feed(data: bytes) -> None:
            rest.extend(data)
            *lines, tail = bytes(rest).split(b"\n")
            rest[:] = tail
            for line in lines:
                if line.strip():
                    take(line)

        await self.each_chunk("GET", url, b"", b"application/json", feed)
        if rest.strip():
            take(bytes(rest))

    async def each_chunk(
        self, method: str, url: str, body: bytes, content_type: bytes, take: Callable[[bytes], None]
    ) -> None:
        headers = [(name, value) for name, value in self.headers if name not in (b"content-type", b"accept")]
        headers.append((b"content-type", content_type))
        # One scope whose deadline moves on with every piece that arrives: an idle timeout
        # for the price of one scope per call (a control call is rare).
        waiting = trio.CancelScope(deadline=trio.current_time() + self.timeout + len(body) / 1e6)
        try:
            with waiting:
                async with self.pool.open_stream(method, url, headers=headers, body=body) as response:
                    waiting.deadline = trio.current_time() + self.timeout
                    if not 200 <= response.status < 300:
                        raise await status_error(response, self.redact)
                    while data := await response.receive_some():
                        waiting.deadline = trio.current_time() + self.timeout
                        take(data)
        except TransportError as exc:
            raise _transport_failure(exc, self.redact) from None
        if waiting.cancelled_caught:
            raise RetryableError(
                f"{method} {url}: no answer within {self.timeout:g}s (control_timeout)",
                kind=ErrorKind.TIMEOUT,
            )


def error_in_result(
    message: str, error_type: str | None, status: int | None, redact: Callable[[str], str]
) -> BackendError:
    """The attempt error for a request the batch reports as failed: the shared kind table
    decides the kind (a server-side failure when it names none)."""
    text = redact(f"batch request failed: {error_type or status or 'error'}: {message}")[:600]
    if is_context_length(message, error_type):
        return FatalError(text, kind=ErrorKind.CONTEXT_LENGTH)
    return error_for(kind_for(status, error_type) or ErrorKind.SERVER_ERROR, text)


def not_run(why: str) -> RetryableError:
    """The attempt error for a request its batch ended without running: ``expired`` (the
    provider's 24 h window passed) or ``canceled``; both go into a later batch."""
    if why == "expired":
        return RetryableError("the batch expired before this request ran", kind=ErrorKind.EXPIRED)
    return RetryableError(f"the batch ended ({why}) before this request ran", kind=ErrorKind.API_ERROR)


@attrs.frozen
class BatchApi:
    """One provider's batch API: its streaming API (request, decoder, prices), the remote batch
    endpoints, how a complete reply becomes server-sent events, and its documented limits."""

    name: str
    streaming: HttpApi
    settings: type
    remote: Callable[[Control, Any, Callable[[str], str]], RemoteBatches]
    events: Callable[[Any], list[ServerSentEvent]]
    max_requests: int
    max_bytes: int


class BatchBackend(HttpBackend):
    """Hands each attempt to the collector and replays its result (see the module docstring)."""

    waits_for_results = True

    def __init__(self, api: BatchApi, settings: Any, pool: ConnectionPool, key: ApiKey | None) -> None:
        super().__init__(api.streaming, settings, pool, key)
        self.batch_api = api
        self.refunds_unused_tokens = True  # no rate limit of the streaming API is spent
        self.announces_limits = False  # nor does a waiting attempt hear of one
        self.derived_concurrency_ceiling = None  # its in-flight limit is its own (jobs waiting)
        headers = api.streaming.headers(settings, api.streaming.options(), key)
        control = Control(pool, headers, key, settings.control_timeout)
        self.collector = Collector(
            api.remote(control, settings, redactor(key)),
            Chunking(settings.batch_requests, settings.batch_bytes, settings.batch_linger),
            Polling(settings.poll_min, settings.poll_max),
            self._report,
            intend=self._intend,
        )
        self.emit_batch: EmitBatch | None = None
        """How a batch-level event reaches the bus (None: nowhere); see :meth:`attach`."""

    def attach(
        self, emit_batch: EmitBatch, log: str | None, within_cap: Callable[[float], bool] | None = None
    ) -> None:
        """Join the run (the runner calls this before any attempt): batch-level events go to
        ``emit_batch``; the remote batches ``log`` shows holding requests whose results no run
        has taken yet are adopted, and those whose create call was sent with no answer logged
        are looked up at the provider, so a resumed run waits for them instead of paying twice; and
        each chunk is sent only while ``within_cap(0)`` (its attempts have reserved their
        estimates, at the batch price, when they started)."""
        self.emit_batch = emit_batch
        if within_cap is not None:
            self.collector.fits = lambda: within_cap(0.0)
        if log is not None and os.path.exists(log):
            left = left_in(log, self.batch_api.name)
            for batch_id, requests in left.batches.items():
                self.collector.adopt(batch_id, requests)
            if left.intents:
                lost = [LostCreate(i.label, i.at, i.count, i.requests) for i in left.intents]
                self.collector.look_up(lost, left.known)

    async def stop_remote(self, cancel: bool | None) -> None:
        """The run stops: each remote batch still running is cancelled (``cancel``, or the
        ``cancel_remote`` setting when None) or left running, and a ``batch_stopped`` says which.
        Cancelling takes at most :data:`~.collector.CANCEL_WAIT` seconds."""
        chosen = self.settings.cancel_remote if cancel is None else cancel
        for stopped in await self.collector.stop(cancel=chosen):
            action = "cancel" if stopped.cancelled else "detach"
            await self._emit(BatchStopped(self.batch_api.name, stopped.batch_id, action, stopped.note))

    async def _report(
        self, batch_id: str, custom_ids: Sequence[str], counts: Mapping[str, int] | None, note: str
    ) -> None:
        name = self.batch_api.name
        await self._emit(
            BatchSubmitted(name, batch_id, tuple(custom_ids), note)
            if counts is None
            else BatchProgress(name, batch_id, dict(counts))
        )

    async def _intend(self, label: str, custom_ids: Sequence[str], at: float) -> None:
        await self._emit(BatchSubmitting(self.batch_api.name, label, tuple(custom_ids), at))

    async def _emit(self, event: BatchSubmitting | BatchSubmitted | BatchProgress | BatchStopped) -> None:
        if self.emit_batch is None:
            return
        try:
            await self.emit_batch(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # The run's events have ended (its last job is done) while a batch nobody waits
            # for is still polled, until the backend closes: nothing is lost.
            self.emit_batch = None

    async def stream(self, job: JobSpec, attempt: int, emit: Emit) -> None:
        """Wait for this attempt's result from a remote batch, then emit the events its
        streamed twin would have; raises the attempt's error for a failed request."""
        api = self.api
        options = job.options if isinstance(job.options, api.options) else api.options()
        body = api.body(job, options, self.settings)
        body.pop("stream", None)
        body.pop("stream_options", None)
        request_id = custom_id(job.id)
        if self.collector.drop_changed(request_id, job.content_hash):
            await emit(
                StreamWarning(
                    "the job was edited while an earlier run's remote batch held it: that batch's "
                    "result is ignored and the request is sent again"
                )
            )
        outcome = await self.collector.request(request_id, body)
        if outcome.error is not None:
            raise copy.copy(outcome.error)  # one error object per job: tracebacks differ
        decoder = api.decoder(job.model, self.prices, redactor(self.key))
        for event in replay(decoder, self.batch_api.events(outcome.reply)):
            await emit(event)


class BatchKind(HttpKind):
    """The registry entry of a batch backend."""

    default_concurrency: int | None = DEFAULT_CONCURRENCY
    derived_concurrency_ceiling = None  # not derived from a streaming rate limit
    files_per_attempt = 0  # a waiting attempt holds no connection

    def __init__(self, api: BatchApi) -> None:
        super().__init__(api.streaming)
        self.batch_api = api
        self.name = api.name
        self.Settings = api.settings

    def preflight(self, settings: Any, jobs: Sequence[Alike]) -> list[str]:
        problems = super().preflight(settings, jobs)
        api = self.batch_api
        if settings.batch_requests > api.max_requests:
            problems.append(
                f"backends.{self.name}.batch_requests: at most {api.max_requests} (the API's limit)"
            )
        if settings.batch_bytes > api.max_bytes:
            problems.append(f"backends.{self.name}.batch_bytes: at most {api.max_bytes} (the API's limit)")
        return problems

    @asynccontextmanager
    async def _open_batch(self, settings: Any) -> AsyncIterator[BatchBackend]:
        async with open_http_pool(settings) as pool, trio.open_nursery() as nursery:
            backend = BatchBackend(self.batch_api, settings, pool, read_api_key(settings))
            await nursery.start(backend.collector.run)
            try:
                yield backend
            finally:
                nursery.cancel_scope.cancel()

    def open(self, settings: Any, *, seed: int) -> Any:
        return self._open_batch(settings)
