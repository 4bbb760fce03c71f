"""Client CPU per streamed SSE event over TLS on loopback: aiohttp (reference) against ours.

    python -m benchmarks.http_transport [--requests 2000] [--concurrency 100] [--repeats 5]

Needs the ``bench`` extra (``pip install -e '.[bench]'``: aiohttp, trustme). The server
(:mod:`benchmarks.sse_server`) runs in its own process, pinned to the last CPU; each client run
is a fresh child process pinned to CPU 0, and variants take turns repeat by repeat, so drift
on a noisy machine hits them alike. A child measures its own CPU time (``process_time``) around
the workload only: imports and the TLS context are excluded, TLS handshakes are included.

Every variant does the same work per event: :class:`orchestrator.http.SSEDecoder` on the body
bytes and ``orjson.loads`` of each payload, and every response is checked. Variants:

``aiohttp``       aiohttp under asyncio: the reference (it cannot run under trio)
``orchestrator``  our pool (:mod:`orchestrator.http`) under trio
``openai``        our whole ``openai`` backend through :func:`orchestrator.run.batch.execute` (no log):
                  the decoder, events, bus and aggregation on top of the transport (not part of
                  the target; shows what a real batch costs per event)
``trio-floor``    not a client: trio's TLS stream with no HTTP parsing at all (a floor for any
                  trio transport)

The result: minimum and median CPU seconds per variant, microseconds per event, and the median
ratio to aiohttp. Target: ``orchestrator`` <= 1.5x ``aiohttp``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.sse_server import EVENTS_PER_RESPONSE, N_DELTAS, PROMPT_TOKENS
from orchestrator.http import ServerSentEvent, SSEDecoder, client_ssl_context

PATH = "/v1/chat/completions"
REQUEST = {
    "model": "gpt-4o-mini",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "Say hello " * 20}],
}
HEADERS = {
    "authorization": "Bearer sk-bench",
    "accept": "text/event-stream",
    "content-type": "application/json",
}
VARIANTS = ("aiohttp", "orchestrator", "openai", "trio-floor", "httpx")
ROOT = Path(__file__).resolve().parent.parent


class Tally:
    """The per-event work every variant does, and the check that every response was whole."""

    __slots__ = ("content", "done", "events", "usage")

    def __init__(self) -> None:
        self.events = self.content = self.usage = self.done = 0

    def on_events(self, events: list[ServerSentEvent]) -> None:
        for event in events:
            self.events += 1
            if event.data == "[DONE]":
                self.done += 1
                continue
            chunk = orjson.loads(event.data)
            choices = chunk["choices"]
            if choices:
                self.content += len(choices[0]["delta"].get("content") or "")
            else:
                self.usage += chunk["usage"]["total_tokens"]

    def check(self, requests: int) -> None:
        if (self.events, self.done, self.usage) != (
            requests * EVENTS_PER_RESPONSE,
            requests,
            requests * (PROMPT_TOKENS + N_DELTAS),
        ):
            raise SystemExit(f"bad responses: events={self.events} done={self.done} usage={self.usage}")


def run_aiohttp(url: str, ca: str, requests: int, concurrency: int) -> float:
    import asyncio

    import aiohttp

    context = client_ssl_context(ca)
    tally = Tally()
    body = orjson.dumps(REQUEST)

    async def main() -> None:
        left = [requests]
        connector = aiohttp.TCPConnector(limit=concurrency, ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    async with session.post(url, data=body, headers=HEADERS) as response:
                        assert response.status == 200
                        decoder = SSEDecoder()
                        async for data in response.content.iter_any():
                            tally.on_events(decoder.feed(data))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    cpu = measure(lambda: asyncio.run(main()))
    tally.check(requests)
    return cpu


def run_httpx(url: str, ca: str, requests: int, concurrency: int) -> float:
    """httpx's async client under asyncio (HTTP/1.1, connections reused): the client users would
    pick first; the same decoder and per-event work as the others."""
    import asyncio

    import httpx

    context = client_ssl_context(ca)
    tally = Tally()
    body = orjson.dumps(REQUEST)

    async def main() -> None:
        left = [requests]
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(verify=context, limits=limits, timeout=60) as client:

            async def worker() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    async with client.stream("POST", url, content=body, headers=HEADERS) as response:
                        assert response.status_code == 200
                        decoder = SSEDecoder()
                        async for data in response.aiter_raw():
                            tally.on_events(decoder.feed(data))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    cpu = measure(lambda: asyncio.run(main()))
    tally.check(requests)
    return cpu


def run_orchestrator(url: str, ca: str, requests: int, concurrency: int) -> float:
    import trio

    from orchestrator.http import open_pool

    context = client_ssl_context(ca)
    tally = Tally()
    body = orjson.dumps(REQUEST)
    headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]

    async def main() -> None:
        left = [requests]
        async with open_pool(context) as pool:

            async def worker() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    async with pool.open_stream("POST", url, headers=headers, body=body) as response:
                        assert response.status == 200
                        decoder = SSEDecoder()
                        while data := await response.receive_some():
                            tally.on_events(decoder.feed(data))

            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            assert pool.stats.connects == concurrency, pool.stats

    cpu = measure(lambda: trio.run(main))
    tally.check(requests)
    return cpu


def run_openai(url: str, ca: str, requests: int, concurrency: int) -> float:
    import trio

    from orchestrator.config.jobfile import build_batch
    from orchestrator.run.batch import execute

    os.environ["BENCH_OPENAI_KEY"] = "sk-bench"
    settings = {
        "base_url": url.removesuffix("/chat/completions"),
        "ca_file": ca,
        "api_key_env": "BENCH_OPENAI_KEY",
    }
    spec = build_batch(
        [f"q{i}" for i in range(requests)],
        {
            "backend": "openai",
            "model": "gpt-4o-mini",
            "concurrency": concurrency,
            "backends": {"openai": settings},
        },
    )
    results: list[Any] = []

    async def main() -> None:
        results.append(await execute(spec, keep_text=False))

    cpu = measure(lambda: trio.run(main))
    summary = results[0].summary
    if summary.succeeded != requests or summary.tokens.output != requests * N_DELTAS:
        raise SystemExit(f"bad batch: {summary}")
    return cpu


def run_trio_floor(url: str, ca: str, requests: int, concurrency: int) -> float:
    """Prebuilt request bytes on kept-alive TLS streams, read until the final chunk; the raw
    chunked bytes go to the SSE decoder (chunk-size lines are ignored as unknown fields, valid
    only because this server never splits an event across chunks)."""
    import trio

    context = client_ssl_context(ca)
    tally = Tally()
    body = orjson.dumps(REQUEST)
    port = int(url.split(":")[2].split("/")[0])
    head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
    request = f"POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{head}content-length: {len(body)}\r\n\r\n"
    raw = request.encode() + body

    async def main() -> None:
        left = [requests]

        async def worker() -> None:
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1", https_compatible=True)
            async with stream:
                while left[0] > 0:
                    left[0] -= 1
                    await stream.send_all(raw)
                    decoder = SSEDecoder()
                    while True:
                        data = await stream.receive_some(65536)
                        tally.on_events(decoder.feed(data))
                        if data.endswith(b"\r\n0\r\n\r\n"):
                            break

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)

    cpu = measure(lambda: trio.run(main))
    tally.check(requests)
    return cpu


RUNNERS: dict[str, Callable[[str, str, int, int], float]] = {
    "aiohttp": run_aiohttp,
    "orchestrator": run_orchestrator,
    "openai": run_openai,
    "trio-floor": run_trio_floor,
    "httpx": run_httpx,
}


def measure(workload: Callable[[], None]) -> float:
    start = time.process_time()
    workload()
    return time.process_time() - start


def child(args: argparse.Namespace) -> None:
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    url = f"https://127.0.0.1:{args.port}{PATH}"
    cpu = RUNNERS[args.run](url, args.ca, args.requests, args.concurrency)
    print("RESULT " + json.dumps({"variant": args.run, "cpu": cpu}), flush=True)


def driver(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    client_cpu, server_cpu = (0, cpus - 1) if cpus >= 2 and not args.no_pin else (None, None)
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as certdir:
        command = [
            sys.executable,
            "-m",
            "benchmarks.sse_server",
            "--certdir",
            certdir,
            "--delay",
            str(args.delay),
        ]
        if server_cpu is not None:
            command += ["--cpu", str(server_cpu)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline().split()[1])
            for repeat in range(args.repeats):
                for variant in variants:
                    command = [
                        sys.executable, "-m", "benchmarks.http_transport", "--run", variant,
                        "--port", str(port), "--ca", str(Path(certdir) / "ca.pem"),
                        "--requests", str(args.requests), "--concurrency", str(args.concurrency),
                    ]  # fmt: skip
                    if client_cpu is not None:
                        command += ["--cpu", str(client_cpu)]
                    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
                    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                    if done.returncode or not lines:
                        raise SystemExit(f"{variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
                    cpu[variant].append(json.loads(lines[0][7:])["cpu"])
                    print(f"repeat {repeat} {variant:13s} {cpu[variant][-1]:.3f} s", flush=True)
        finally:
            server.terminate()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
    print("\n" + report(args, cpu))


def report(args: argparse.Namespace, cpu: dict[str, list[float]]) -> str:
    import h11
    import trio

    events = args.requests * EVENTS_PER_RESPONSE
    versions = f"trio {trio.__version__}, h11 {h11.__version__}, orjson {orjson.__version__}"
    try:
        import aiohttp

        versions = f"aiohttp {aiohttp.__version__}, " + versions
    except ImportError:
        pass
    reference = statistics.median(cpu["aiohttp"]) if cpu.get("aiohttp") else None
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, {ssl.OPENSSL_VERSION}",
        f"versions: {versions}",
        f"workload: {args.requests} requests x {EVENTS_PER_RESPONSE} events over TLS, concurrency "
        f"{args.concurrency}, server pause {args.delay:g}s between events, connections reused, "
        f"{args.repeats} repeats",
        "",
        "| client | CPU s min | CPU s median | us/event (median) | vs aiohttp (median) | vs aiohttp (min) |",
        "|---|---|---|---|---|---|",
    ]
    for variant, values in cpu.items():
        median = statistics.median(values)
        ratio = f"{median / reference:.2f}x" if reference else "-"
        ratio_min = f"{min(values) / min(cpu['aiohttp']):.2f}x" if reference else "-"
        per_event = median / events * 1e6
        cells = [variant, f"{min(values):.3f}", f"{median:.3f}", f"{per_event:.1f}", ratio, ratio_min]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Client CPU per streamed SSE event: aiohttp vs orchestrator.http"
    )
    parser.add_argument("--run", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.0, help="server pause between events (s)")
    parser.add_argument("--variants", default="", help=f"comma list of: {', '.join(VARIANTS)}")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and server to CPUs")
    args = parser.parse_args()
    if args.run:
        child(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
