"""What the fake batch APIs (:mod:`.anthropic.batches`, :mod:`.openai.batches`) share: the state
of their remote batches, kept apart from any one server so that a fake can be closed and opened
again on the same port mid-batch (a restart) and carry on where it was, and the loop that
serves one request per connection on 127.0.0.1.

Processing is faster than real: a batch ends ``processing`` seconds (trio's clock, so virtual
in tests) after it was created, its requests finishing one after another over that time. What
each request gets is decided when its batch is created: the next outcome scripted for its
``custom_id`` (:meth:`BatchStore.script`), else the store's ``default`` (a function of the
request body). ``submissions`` counts, per ``custom_id``, how many batches have carried it: a
client that re-attaches instead of resubmitting leaves it at 1.

Cancel, as the providers do it: a batch that has not ended is ``canceling`` for ``cancelling``
seconds and then ends; requests that finished before the cancel keep their outcome, the others
end canceled. Cancelling an ended batch is refused (400). :attr:`BatchStore.drop_creates` makes
the next creates hang up after creating the batch, as a create call that times out or loses its
connection does: the batch exists and the client never heard of it. :attr:`BatchStore.hang_creates`
makes them never answer at all (a client without a timeout waits for ever; one killed meanwhile
never learns the batch's id).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import attrs
import trio

from orchestrator.testing.anthropic.server import HOST
from orchestrator.testing.anthropic.wire import json_response
from orchestrator.testing.http11 import read_request


@attrs.frozen
class Errored:
    """The request fails inside the batch with this status and error type (``overloaded_error``
    and 5xx are retried by a client, ``invalid_request_error``/400 is not)."""

    status: int = 500
    error_type: str = "api_error"
    message: str = "fake: the request failed"


@attrs.frozen
class Expired:
    """The batch ends before the request ran (the provider's 24 h window)."""


@attrs.define
class RemoteBatch:
    """One created batch: its requests ``(custom_id, body, outcome)`` and when it ends."""

    id: str
    created: float
    ends: float
    requests: list[tuple[str, Any, Any]]
    created_at: float = attrs.Factory(time.time)
    """Wall-clock creation time, as the APIs list it."""
    metadata: dict[str, str] = attrs.Factory(dict)
    cancel_at: float | None = None
    """When a cancel arrived (trio's clock), None if none did."""
    cancelling: float = 0.0
    files: dict[str, str] = attrs.Factory(dict)
    """The OpenAI fake's output and error file ids, made when the batch ends."""

    def ended(self, now: float) -> bool:
        if self.cancel_at is not None:
            return now >= min(self.ends, self.cancel_at + self.cancelling)
        return now >= self.ends

    def cancelling_now(self, now: float) -> bool:
        return self.cancel_at is not None and not self.ended(now)

    def finished(self, index: int) -> float:
        """When request ``index`` finishes, if no cancel stops it first."""
        share = (index + 1) / len(self.requests)
        return self.created + (self.ends - self.created) * share

    def canceled(self, index: int) -> bool:
        """Whether request ``index`` ends canceled: a cancel came before it finished."""
        return self.cancel_at is not None and self.cancel_at < self.finished(index)

    def cancel(self, now: float) -> bool:
        """Start cancelling; False when the batch has ended (the APIs refuse that)."""
        if self.ended(now):
            return False
        if self.cancel_at is None:
            self.cancel_at = now
        return True


class BatchStore:
    """The fake's state; see the module docstring. Use it from the trio run that serves it."""

    def __init__(self, default: Callable[[Any], Any], processing: float = 1.0) -> None:
        self.default = default
        self.processing = processing
        self.cancelling = min(processing, 1.0)
        """Seconds a cancelled batch stays ``canceling`` before it ends."""
        self.drop_creates = 0
        """How many of the next creates hang up after creating their batch."""
        self.hang_creates = 0
        """How many of the next creates never answer after creating their batch (before
        :attr:`drop_creates` counts)."""
        self.cancels: list[str] = []
        """The ids of the batches a cancel was asked for, in order."""
        self.batches: dict[str, RemoteBatch] = {}
        self.files: dict[str, bytes] = {}
        self.submissions: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []
        """``(method, path)`` of every request served, in order."""
        self._scripts: dict[str, deque[Any]] = {}
        self._ids = itertools.count(1)

    def script(self, custom_id: str, *outcomes: Any) -> None:
        """Queue outcomes for the next batches carrying ``custom_id``, in order: a provider
        ``Reply``, :class:`Errored` or :class:`Expired`."""
        self._scripts.setdefault(custom_id, deque()).extend(outcomes)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def create(
        self, prefix: str, requests: list[tuple[str, Any]], metadata: Mapping[str, str] | None = None
    ) -> RemoteBatch:
        """A new batch of ``(custom_id, body)``, outcomes decided now."""
        now = trio.current_time()
        decided = []
        for custom_id, body in requests:
            self.submissions[custom_id] += 1
            script = self._scripts.get(custom_id)
            decided.append((custom_id, body, script.popleft() if script else self.default(body)))
        batch = RemoteBatch(
            self.new_id(prefix),
            now,
            now + self.processing,
            decided,
            metadata=dict(metadata or {}),
            cancelling=self.cancelling,
        )
        self.batches[batch.id] = batch
        return batch

    def after_create(self) -> None:
        """Called by a create route once its batch is made: raises :class:`Hang` or
        :class:`HangUp` while :attr:`hang_creates` or :attr:`drop_creates` asks for it."""
        if self.hang_creates > 0:
            self.hang_creates -= 1
            raise Hang
        if self.drop_creates > 0:
            self.drop_creates -= 1
            raise HangUp

    def cancel(self, batch: RemoteBatch) -> bool:
        """Ask ``batch`` to cancel (recorded in :attr:`cancels`); False when it has ended."""
        self.cancels.append(batch.id)
        return batch.cancel(trio.current_time())

    def finish(self) -> list[str]:
        """End every batch still processing now, its requests finished (as if its time had
        come): the ids of the batches ended. A test that must not race the clock runs the fake
        with a long ``processing`` and finishes the batches when it is ready."""
        now, ended = trio.current_time(), []
        for batch in self.batches.values():
            if not batch.ended(now):
                batch.ends = now
                ended.append(batch.id)
        return ended

    def newest_first(self) -> list[RemoteBatch]:
        """Every batch, the newest first (the order both list endpoints use)."""
        return sorted(self.batches.values(), key=lambda batch: batch.created, reverse=True)


class HangUp(Exception):
    """Raised by a route: close the connection without an answer (the work is done)."""


class Hang(Exception):
    """Raised by a route: keep the connection open and never answer (the work is done)."""


def requested_model(body: Any, default: str) -> str:
    """The model a request body names (``default`` when it names none)."""
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else default


SUBMISSIONS = "/fake/submissions"
"""``GET`` it from a fake running in another process: ``{custom_id: batches that carried it}``."""
CANCELS = "/fake/cancels"
"""``GET`` it from a fake running in another process: the batch ids a cancel was asked for."""
FINISH = "/fake/finish"
"""``POST`` to it: every batch still processing ends now (:meth:`BatchStore.finish`); the
answer lists their ids."""

Route = Callable[[str, str, Mapping[str, str], Mapping[str, str], bytes], bytes]
"""``route(method, path, query, headers, body)``: the whole response (or :class:`HangUp`)."""


@attrs.frozen
class FakeBatches:
    """A running fake: its state and port."""

    store: BatchStore
    port: int
    prefix: str = ""
    """What the provider's ``base_url`` has after the host (OpenAI's: ``/v1``)."""

    @property
    def base_url(self) -> str:
        """What ``base_url`` should say."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"


@asynccontextmanager
async def open_fake_batches(
    route: Callable[[BatchStore], Route], store: BatchStore, port: int, prefix: str = ""
) -> AsyncIterator[FakeBatches]:
    """Serve ``route(store)`` for the block on 127.0.0.1 (``port`` 0: a free one)."""
    async with serve(route(store), store, port) as bound:
        yield FakeBatches(store, bound, prefix)


@asynccontextmanager
async def serve(route: Route, store: BatchStore, port: int) -> AsyncIterator[int]:
    """Serve ``route`` on 127.0.0.1 (``port`` 0: a free one) for the block; the bound port.
    Leaving the block closes the listener and every connection."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            request = await read_request(stream)
            if request is None:
                return
            method, path, query = request.method, request.path, request.query
            headers, body = request.headers, request.body
            if method == "GET" and path == SUBMISSIONS:
                await stream.send_all(json_response(200, dict(store.submissions)))
                return
            if method == "GET" and path == CANCELS:
                await stream.send_all(json_response(200, store.cancels))
                return
            if method == "POST" and path == FINISH:
                await stream.send_all(json_response(200, store.finish()))
                return
            store.requests.append((method, path))
            await stream.send_all(route(method, path, dict(parse_qsl(query)), headers, body))
        except Hang:
            await trio.sleep_forever()
        except (trio.BrokenResourceError, trio.ClosedResourceError, HangUp):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(port, host=HOST)
        bound: int = listeners[0].socket.getsockname()[1]
        await nursery.start(trio.serve_listeners, handle, listeners)
        try:
            yield bound
        finally:
            nursery.cancel_scope.cancel()


def serve_until_interrupted(
    name: str, open_fake: Callable[[BatchStore, int], Any], new_store: Callable[[float], BatchStore]
) -> None:
    """``python -m orchestrator.testing.NAME.batches``: serve a fake (echo replies) until Ctrl-C,
    printing its base URL first."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog=f"python -m orchestrator.testing.{name}.batches",
        description=f"A fake {name} batch API on 127.0.0.1 (echo replies); GET {SUBMISSIONS} "
        f"counts the submissions of each custom_id; POST {FINISH} ends every batch still processing.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--processing", type=float, default=5.0, help="seconds until a batch ends")
    parser.add_argument(
        "--hang-creates", type=int, default=0, help="this many creates make their batch and never answer"
    )
    args = parser.parse_args()

    async def main() -> None:
        store = new_store(args.processing)
        store.hang_creates = args.hang_creates
        async with open_fake(store, args.port) as fake:
            print(fake.base_url, flush=True)
            await trio.sleep_forever()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)
