"""Helpers for the HTTP transport tests: read a streamed reply, a loopback CONNECT proxy."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from orchestrator.config.jobfile import build_batch
from orchestrator.http import ConnectionPool, SSEDecoder
from orchestrator.run.batch import BatchResult, execute
from tests.helpers import Recorder

REQUEST = b'{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}'


async def post_and_read(pool: ConnectionPool, url: str, *, limit: int | None = None) -> tuple[int, list[str]]:
    """POST a chat request; the status and the SSE data of the reply (stop after ``limit``)."""
    data: list[str] = []
    async with pool.open_stream(
        "POST", url, headers=[(b"content-type", b"application/json")], body=REQUEST
    ) as r:
        if r.status != 200:
            return r.status, [(await r.read_all()).decode()]
        decoder = SSEDecoder()
        while piece := await r.receive_some():
            data.extend(event.data for event in decoder.feed(piece))
            if limit is not None and len(data) >= limit:
                break
    return r.status, data


def collect_garbage() -> None:
    """Make a leaked socket's ResourceWarning happen now (warnings are errors in this suite)."""
    gc.collect()


async def wait_until_zero(get: Callable[[], int], what: str) -> None:
    """Poll ``get`` until it says 0 (a server's count of open connections: there is no event to
    wait on, the server learns of a close only by reading); fails, naming ``what``, after 30
    seconds: a guard against a leak, not a claim about speed (a busy machine closes a thousand
    connections in its own time)."""
    with trio.move_on_after(30.0):
        while get():  # noqa: ASYNC110
            await trio.sleep(0.005)
    assert not get(), f"{what}: {get()} still open"


class ConnectProxy:
    """A loopback HTTP proxy that only tunnels (``CONNECT``); ``refuse`` answers 407 instead."""

    def __init__(self, port: int, refuse: bool) -> None:
        self.port = port
        self.refuse = refuse
        self.targets: list[str] = []
        self.authorizations: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://user:pa%3Ass@127.0.0.1:{self.port}"

    async def handle(self, client: trio.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await client.receive_some(65536)
                if not data:
                    return
                head += data
            lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
            target = lines[0].split(" ")[1]
            self.targets.append(target)
            auth = [
                line.split(":", 1)[1].strip()
                for line in lines[1:]
                if line.lower().startswith("proxy-authorization")
            ]
            self.authorizations.append(auth[0] if auth else None)
            if self.refuse:
                await client.send_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n"
                )
                return
            host, _, port = target.rpartition(":")
            async with await trio.open_tcp_stream(host, int(port)) as upstream:
                await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                async with trio.open_nursery() as nursery:

                    async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                        try:
                            while data := await source.receive_some(65536):
                                await sink.send_all(data)
                        except trio.BrokenResourceError:
                            pass
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(pipe, client, upstream)
                    nursery.start_soon(pipe, upstream, client)


@asynccontextmanager
async def open_connect_proxy(*, refuse: bool = False) -> AsyncIterator[ConnectProxy]:
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        proxy = ConnectProxy(listeners[0].socket.getsockname()[1], refuse)
        await nursery.start(trio.serve_listeners, proxy.handle, listeners)
        yield proxy
        nursery.cancel_scope.cancel()


async def run_jobs(
    backend: str, settings: dict[str, object], queries: list[object], **defaults: object
) -> tuple[BatchResult, Recorder]:
    """Run ``queries`` on ``backend`` with fast retries; the result and every event."""
    recorder = Recorder()
    layer: dict[str, object] = {
        "backend": backend,
        "retry": {"base_delay": 0.01, "max_delay": 0.05},
        "backends": {backend: settings},
        **defaults,
    }
    result = await execute(build_batch(queries, layer), subscribers=[recorder])
    return result, recorder


def events_of(recorder: Recorder, kind: type[Any]) -> list[Any]:
    return [t.event for t in recorder.events if isinstance(t.event, kind)]


def fake_batches_process(env: Mapping[str, str], *args: str) -> Iterator[str]:
    """For a fixture: the fake Message Batches API (``python -m
    orchestrator.testing.anthropic.batches ARGS``) in its own process; yields its base URL,
    then stops that process (by its own pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.testing.anthropic.batches", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
