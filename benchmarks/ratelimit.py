"""A rate-limited batch over loopback: our makespan and 429 count against the ideal, and against
a naive ``asyncio.gather`` + ``asyncio.Semaphore`` client (aiohttp) that retries every 429 after
the server's retry-after.

    python -m benchmarks.ratelimit [--requests 2000] [--write RESULT.md]

Needs the ``bench`` extra (aiohttp). The server is the tests' fake OpenAI API
(``python -m orchestrator.testing.openai``) in its own process, a fresh one per client so each
starts with full buckets. It meters requests and tokens per minute with token buckets, answers
a request over either limit with OpenAI's 429 (``retry-after`` in whole seconds,
``retry-after-ms`` exact, the JSON error body) and sends ``x-ratelimit-*`` headers with every
response. Every reply arrives whole after ``--latency`` seconds.

Time is not scaled, but the buckets are short: they hold ``--window`` seconds' worth of the
limits (the real APIs hold a minute's worth). A full minute's bucket would let the first
``rpm`` requests through at once, so a batch of a minute or two would be measured mostly
inside the free burst and no client could be compared with the ideal below.

Clients, at the same concurrency ``C``:

``orchestrator``
    the ``openai`` backend through :func:`orchestrator.run.batch.execute`, with
    ``[backends.openai] rpm/tpm`` set to the server's limits and the default retry policy
``orchestrator-learned`` (not run by default)
    the same without rpm/tpm: the backend adopts the limits the ``x-ratelimit-*`` headers announce
``naive``
    aiohttp; each request holds a semaphore slot, and on a 429 sleeps for ``retry-after-ms``
    (else ``retry-after``) and sends again

A short bucket also lets a client that sends in a burst finish a little before the ideal (the
first bucketful is free); ours paces from the first request, so it cannot.

Ideal makespan: ``max(N / RPM, ceil(N / C) * latency)``, with the token limit's
``N * tokens / TPM`` as a third term (the defaults keep it below the request term). Target:
``orchestrator`` within 1.05x of the ideal with 429s on at most 1% of requests.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from benchmarks.table import cpu_model

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.05
TARGET_429 = 0.01


@attrs.frozen
class Setup:
    """The server's limits and the workload, shared by every client."""

    requests: int
    concurrency: int
    rpm: float
    tpm: float
    window: float
    latency: float
    words: int

    def prompt(self, i: int) -> str:
        return f"question {i:04d}"

    def tokens(self, i: int) -> int:
        """What request ``i`` costs: the fake counts a prompt token per 4 characters (plus one),
        as the runner estimates, and one per word of the reply."""
        return len(self.prompt(i)) // 4 + 1 + self.words

    def ideal(self) -> float:
        tokens = sum(self.tokens(i) for i in range(self.requests))
        return max(
            self.requests * 60.0 / self.rpm,
            tokens * 60.0 / self.tpm,
            math.ceil(self.requests / self.concurrency) * self.latency,
        )


@attrs.frozen
class Outcome:
    client: str
    makespan: float
    succeeded: int
    refused: int
    """429 responses the client received."""


class FakeServer:
    """The fake OpenAI API in a child process; a context manager that stops it afterwards."""

    def __init__(self, setup: Setup) -> None:
        self.command = [
            sys.executable, "-m", "orchestrator.testing.openai", "--port", "0", "--quiet",
            "--rpm", str(setup.rpm), "--tpm", str(setup.tpm), "--window", str(setup.window),
            "--latency", str(setup.latency), "--words", str(setup.words),
        ]  # fmt: skip
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        """Start the server; its base URL (``http://127.0.0.1:PORT/v1``)."""
        self.process = subprocess.Popen(self.command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # "fake OpenAI API on http://127.0.0.1:PORT/v1 ..."
        if " on http://" not in line:
            self.__exit__()
            raise SystemExit(f"the fake server did not start: {line}{self.process.stderr.read()}")
        return line.split(" on ", 1)[1].split()[0]

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()


def run_orchestrator(setup: Setup, base_url: str, *, configured: bool = True) -> Outcome:
    """Our batch; ``configured`` False: no rpm/tpm set, the backend learns them from headers."""
    import trio

    from orchestrator.config.jobfile import build_batch
    from orchestrator.errors import ErrorKind
    from orchestrator.events import JobFailed, RetryScheduled, Tagged
    from orchestrator.run.batch import execute

    os.environ["BENCH_OPENAI_KEY"] = "sk-bench"
    refused = [0]
    settings: dict[str, object] = {"base_url": base_url, "api_key_env": "BENCH_OPENAI_KEY"}
    if configured:
        settings |= {"rpm": setup.rpm, "tpm": setup.tpm}

    class Count429:
        async def deliver(self, batch: Sequence[Tagged]) -> None:
            for tagged in batch:
                event = tagged.event
                if (
                    isinstance(event, RetryScheduled | JobFailed)
                    and event.error_kind is ErrorKind.RATE_LIMITED
                ):
                    refused[0] += 1

    spec = build_batch(
        [setup.prompt(i) for i in range(setup.requests)],
        {
            "backend": "openai",
            "model": "gpt-4o-mini",
            "max_tokens": setup.words,
            "concurrency": setup.concurrency,
            "backends": {"openai": settings},
        },
    )
    results: list[Any] = []

    async def main() -> None:
        started = trio.current_time()
        result = await execute(spec, subscribers=[Count429()], keep_text=False)
        results.append((trio.current_time() - started, result.summary.succeeded))

    trio.run(main)
    makespan, succeeded = results[0]
    return Outcome("orchestrator" if configured else "orchestrator-learned", makespan, succeeded, refused[0])


def run_naive(setup: Setup, base_url: str) -> Outcome:
    import asyncio

    import aiohttp
    import orjson

    from orchestrator.http import SSEDecoder

    url = base_url + "/chat/completions"
    headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
    refused = [0]
    done = [0]

    def body(i: int) -> bytes:
        messages = [{"role": "user", "content": setup.prompt(i)}]
        request = {"model": "gpt-4o-mini", "messages": messages, "stream": True, "max_tokens": setup.words}
        return orjson.dumps(request | {"stream_options": {"include_usage": True}})

    async def main() -> float:
        # The pattern of countless scripts: one task per request, a semaphore for concurrency.
        semaphore = asyncio.Semaphore(setup.concurrency)
        connector = aiohttp.TCPConnector(limit=setup.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> None:
                async with semaphore:
                    while True:
                        async with session.post(url, data=body(i), headers=headers) as response:
                            if response.status == 429:
                                refused[0] += 1
                                await response.read()
                                ms = response.headers.get("retry-after-ms")
                                wait = float(ms) / 1000 if ms else float(response.headers["retry-after"])
                                await asyncio.sleep(wait)
                                continue
                            response.raise_for_status()
                            decoder = SSEDecoder()
                            async for data in response.content.iter_any():
                                if any(e.data == "[DONE]" for e in decoder.feed(data)):
                                    done[0] += 1
                            return

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(setup.requests)))
            return time.perf_counter() - started

    makespan = asyncio.run(main())
    return Outcome("naive", makespan, done[0], refused[0])


def run_learned(setup: Setup, base_url: str) -> Outcome:
    return run_orchestrator(setup, base_url, configured=False)


RUNNERS = {"orchestrator": run_orchestrator, "naive": run_naive, "orchestrator-learned": run_learned}


def machine() -> str:
    import trio

    cpu = cpu_model()
    versions = f"trio {trio.__version__}"
    try:
        import aiohttp

        versions += f", aiohttp {aiohttp.__version__}"
    except ImportError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs (shared), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {versions}"
    )


def report(setup: Setup, outcomes: list[Outcome]) -> str:
    ideal = setup.ideal()
    lines = [
        f"machine: {machine()}",
        f"workload: {setup.requests} requests, concurrency {setup.concurrency}, server limits "
        f"{setup.rpm:g} rpm and {setup.tpm:g} tpm (buckets of {setup.window:g} s), replies after "
        f"{setup.latency:g} s, {setup.tokens(0)} tokens a request",
        f"ideal makespan: {ideal:.2f} s",
        "",
        "| client | makespan s | vs ideal | 429s | 429s / requests | succeeded |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        cells = [
            o.client,
            f"{o.makespan:.2f}",
            f"{o.makespan / ideal:.3f}x",
            str(o.refused),
            f"{o.refused / setup.requests:.1%}",
            str(o.succeeded),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    ours = next((o for o in outcomes if o.client == "orchestrator"), None)
    if ours is not None:
        ratio, share = ours.makespan / ideal, ours.refused / setup.requests
        met = ratio <= TARGET_RATIO and share <= TARGET_429 and ours.succeeded == setup.requests
        lines += [
            "",
            f"target (orchestrator): makespan <= {TARGET_RATIO}x ideal and 429s <= {TARGET_429:.0%} of "
            f"requests: {'met' if met else 'NOT MET'} ({ratio:.3f}x, {share:.2%})",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ratelimit", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rpm", type=float, default=3000.0, help="the server's requests per minute")
    parser.add_argument("--tpm", type=float, default=80000.0, help="the server's tokens per minute")
    parser.add_argument("--window", type=float, default=1.0, help="seconds' worth a bucket holds")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds until a reply")
    parser.add_argument("--words", type=int, default=20, help="tokens in a reply")
    parser.add_argument(
        "--clients", default="orchestrator,naive", help=f"comma list of: {', '.join(RUNNERS)}"
    )
    parser.add_argument("--write", type=Path, help="also write the result (Markdown) to this file")
    args = parser.parse_args(argv)
    setup = Setup(args.requests, args.concurrency, args.rpm, args.tpm, args.window, args.latency, args.words)
    outcomes = []
    for client in args.clients.split(","):
        with FakeServer(setup) as base_url:
            outcome = RUNNERS[client](setup, base_url)
        outcomes.append(outcome)
        print(f"{client}: {outcome.makespan:.2f} s, {outcome.refused} 429s", flush=True)
    text = report(setup, outcomes)
    print("\n" + text)
    if args.write is not None:
        command = "python -m benchmarks.ratelimit " + " ".join(argv if argv is not None else sys.argv[1:])
        args.write.write_text(
            f"# Rate-limited batch: makespan and 429s\n\nCommand: `{command.strip()}`\n\n{text}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
