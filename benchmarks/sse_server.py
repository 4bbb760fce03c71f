"""A loopback TLS server streaming OpenAI-style chat-completion SSE, for the transport benchmark.

Runs in its own process so the client's CPU is measured alone::

    python -m benchmarks.sse_server --certdir DIR   # prints "PORT <n>" when ready

``--certdir`` receives ``ca.pem``, the test CA clients must trust. Binds 127.0.0.1 only.
Every POST gets ``200 text/event-stream``, chunked, keep-alive: 64 content deltas, one usage
chunk and ``data: [DONE]``, one HTTP chunk per event, each written on its own (so one TLS record
per event, as a token-paced stream arrives), the last event and the final chunk together.

Plain asyncio protocols, not h11 or trio: the server's cost must be small and the same for every
client compared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
from pathlib import Path

N_DELTAS = 64
EVENTS_PER_RESPONSE = N_DELTAS + 2
PROMPT_TOKENS = 23
_WORDS = ["Hello", " world", ",", " caf\u00e9", " \u2603", " \U0001f600", " token", " stream"]
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"


def build_events(n_deltas: int = N_DELTAS) -> list[bytes]:
    """The SSE events of one response, each framed as one HTTP chunk."""
    base = {
        "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "object": "chat.completion.chunk",
        "created": 1732550000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
    }
    payloads: list[dict[str, object]] = []
    for i in range(n_deltas):
        delta: dict[str, object] = {"content": _WORDS[i % len(_WORDS)]}
        if i == 0:
            delta = {"role": "assistant", "content": "", "refusal": None}
        finish = "stop" if i == n_deltas - 1 else None
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        payloads.append(base | {"choices": [choice]})
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": n_deltas,
        "total_tokens": PROMPT_TOKENS + n_deltas,
    }
    payloads.append(base | {"choices": [], "usage": usage})
    events = [
        b"data: " + json.dumps(p, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
        for p in payloads
    ]
    events.append(b"data: [DONE]\n\n")
    return [b"%x\r\n%s\r\n" % (len(e), e) for e in events]


class _Protocol(asyncio.Protocol):
    """Sequential keep-alive requests on one connection (no pipelining)."""

    def __init__(self, events: list[bytes], delay: float) -> None:
        self.events = events
        self.delay = delay
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._maybe_respond()

    def _maybe_respond(self) -> None:
        if self.task is not None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        self.task = asyncio.get_running_loop().create_task(self._respond())

    async def _respond(self) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(_HEAD)
        last = len(self.events) - 1
        for i, event in enumerate(self.events):
            if self.transport is None:
                return
            transport.write(event + _LAST_CHUNK if i == last else event)
            await asyncio.sleep(self.delay)  # one write per loop turn: one TLS record per event
        self.task = None
        self._maybe_respond()


def make_server_context(certdir: Path) -> ssl.SSLContext:
    """A trustme CA and a certificate for 127.0.0.1; the CA goes to ``certdir/ca.pem``."""
    import trustme

    certdir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(certdir / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def serve(certdir: Path, delay: float) -> None:
    context = make_server_context(certdir)
    events = build_events()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Protocol(events, delay), "127.0.0.1", 0, ssl=context, backlog=1024
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certdir", type=Path, required=True)
    parser.add_argument("--cpu", type=int, help="pin the server to this CPU")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="pause between events (s): a token-paced reply"
    )
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        asyncio.run(serve(args.certdir, args.delay))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
