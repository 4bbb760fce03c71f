"""Rate-limit profiles: one streaming batch against the fake OpenAI server metering in different
ways; our makespan against the ideal, the 429s we received and the client's CPU seconds.

    python -m benchmarks.ratelimit [--profiles clean,bucket,...] [--requests 2000] [--write RESULT.md]

The server is the fake OpenAI API (``python -m orchestrator.testing.openai``) in its own process, a
fresh one per profile, so every profile starts with full buckets; every reply streams its words
after ``--latency`` seconds. The client is the ``openai`` backend through
:func:`orchestrator.run.batch.execute` with nothing about limits configured: it learns them from
the ``x-ratelimit-*`` headers, as a user who sets nothing would. Profiles:

``none`` (the baseline)
    no limits and no rate-limit headers: what this client does on this machine right now, with
    nothing to pace; on a shared machine its makespan says how much of a profile's is CPU
``clean``
    the server announces 6,000 requests a minute in a minute's bucket and so never refuses this
    batch: the makespan is bounded by the concurrency alone
``bucket``
    1,200 a minute, a token bucket holding a minute's worth (as OpenAI and Anthropic meter)
``fixed-1s``
    1,200 a minute in fixed one-second windows (20 a window), honest headers for those windows
``fixed-60s``
    1,200 a minute in fixed one-minute windows
``faults``
    ``clean``, with 5 % of requests answered with a 500 and 1 % of streams stalling after their
    first words; the jobs' ``timeouts.idle`` is 5 s

Ideal makespans, with ``N`` requests, concurrency ``C``, latency ``L``: ``ceil(N / C) x L``
without a binding limit; for a bucket of ``B`` requests refilling at ``r`` a second also
``(N - B) / r + L``; for fixed windows of ``W`` seconds allowing ``A`` each, also ``k x W + ceil(n
/ C) x L`` where the last window ``k = floor((N - 1) / A)`` holds the last ``n`` requests.
Targets: ``clean`` <= 1.1x, ``bucket`` and ``fixed-1s`` <= 1.05x, ``fixed-60s`` <= 1.1x of the
ideal, ``faults`` <= 2x the ``clean`` run's makespan; 429s <= 1 % of requests in every profile.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

from benchmarks.table import cpu_model

ROOT = Path(__file__).resolve().parent.parent
TARGET_429 = 0.01
FAULTS_VS_CLEAN = 2.0


@attrs.frozen
class Profile:
    """How the server meters, and the target for it (None: judged against the clean run)."""

    name: str
    rpm: float
    window: float
    fixed: bool = False
    fail: float = 0.0
    stall: float = 0.0
    idle: float | None = None
    target: float | None = 1.05

    def describe(self) -> str:
        if not self.rpm:
            return "no limits, no headers"
        meter = f"fixed {self.window:g} s windows" if self.fixed else f"a bucket of {self.window:g} s"
        text = f"{self.rpm:g} rpm, {meter}"
        if self.fail or self.stall:
            text += f"; {self.fail:.0%} HTTP 500, {self.stall:.0%} stalled streams, idle = {self.idle:g} s"
        return text


PROFILES = {
    p.name: p
    for p in (
        Profile("none", 0.0, 60.0, target=None),
        Profile("clean", 6000.0, 60.0, target=1.1),
        Profile("bucket", 1200.0, 60.0, target=1.05),
        Profile("fixed-1s", 1200.0, 1.0, fixed=True, target=1.05),
        Profile("fixed-60s", 1200.0, 60.0, fixed=True, target=1.1),
        Profile("faults", 6000.0, 60.0, fail=0.05, stall=0.01, idle=5.0, target=None),
    )
}


@attrs.frozen
class Setup:
    """The workload, shared by every profile."""

    requests: int
    concurrency: int
    latency: float
    words: int

    def prompt(self, i: int) -> str:
        return f"question {i:04d}"

    def ideal(self, profile: Profile) -> float:
        n, c, latency = self.requests, self.concurrency, self.latency
        unlimited = math.ceil(n / c) * latency
        per_window = profile.rpm * profile.window / 60.0
        if not profile.rpm:
            return unlimited
        if profile.fixed:
            last = math.floor((n - 1) / per_window)
            left = n - last * per_window
            return max(unlimited, last * profile.window + math.ceil(left / c) * latency)
        return max(unlimited, max(0.0, n - per_window) * 60.0 / profile.rpm + latency)


@attrs.frozen
class Outcome:
    profile: Profile
    makespan: float
    succeeded: int
    refused: int
    """429 responses the client received."""
    cpu_s: float
    """The client process's CPU seconds (user + system) for the batch."""


class FakeServer:
    """The fake OpenAI API in a child process; a context manager that stops it afterwards."""

    def __init__(self, setup: Setup, profile: Profile) -> None:
        self.command = [
            sys.executable, "-m", "orchestrator.testing.openai", "--port", "0", "--quiet",
            "--latency", str(setup.latency), "--words", str(setup.words),
            "--fail", str(profile.fail), "--stall", str(profile.stall),
        ]  # fmt: skip
        if profile.rpm:
            self.command += ["--rpm", str(profile.rpm), "--window", str(profile.window)]
        if profile.fixed:
            self.command.append("--fixed")
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


def run_profile(setup: Setup, profile: Profile, base_url: str) -> Outcome:
    """Our batch against one server, limits learned from its headers."""
    import trio

    from orchestrator.config.jobfile import build_batch
    from orchestrator.errors import ErrorKind
    from orchestrator.events import JobFailed, RetryScheduled, Tagged
    from orchestrator.run.batch import execute

    os.environ["BENCH_OPENAI_KEY"] = "sk-bench"
    refused = [0]

    class Count429:
        async def deliver(self, batch: Sequence[Tagged]) -> None:
            for tagged in batch:
                event = tagged.event
                if (
                    isinstance(event, RetryScheduled | JobFailed)
                    and event.error_kind is ErrorKind.RATE_LIMITED
                ):
                    refused[0] += 1

    config: dict[str, object] = {
        "backend": "openai",
        "model": "gpt-4o-mini",
        "max_tokens": setup.words,
        "concurrency": setup.concurrency,
        "backends": {"openai": {"base_url": base_url, "api_key_env": "BENCH_OPENAI_KEY"}},
    }
    if profile.idle is not None:
        config["timeouts"] = {"idle": profile.idle}
    spec = build_batch([setup.prompt(i) for i in range(setup.requests)], config)
    results: list[tuple[float, int]] = []

    async def main() -> None:
        started = trio.current_time()
        result = await execute(spec, subscribers=[Count429()], keep_text=False)
        results.append((trio.current_time() - started, result.summary.succeeded))

    before = resource.getrusage(resource.RUSAGE_SELF)
    trio.run(main)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    makespan, succeeded = results[0]
    return Outcome(profile, makespan, succeeded, refused[0], cpu)


def machine() -> str:
    import trio

    return (
        f"{cpu_model()}, {os.cpu_count()} CPUs (shared), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}"
    )


def report(setup: Setup, outcomes: list[Outcome]) -> str:
    lines = [
        f"machine: {machine()}",
        f"workload: {setup.requests} streaming requests, concurrency {setup.concurrency}, replies after "
        f"{setup.latency:g} s ({setup.words} words), limits learned from the headers",
        "",
        "| profile | server | ideal s | makespan s | makespan / ideal | target | 429s | client CPU s "
        "| succeeded |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    clean = next((o for o in outcomes if o.profile.name == "clean"), None)
    baseline = next((o for o in outcomes if o.profile.name == "none"), None)
    missed = []
    for o in outcomes:
        ideal = setup.ideal(o.profile)
        ratio = o.makespan / ideal
        if o.profile.name == "none":
            target, met = "baseline", o.succeeded == setup.requests
        elif o.profile.target is not None:
            target, met = f"<= {o.profile.target:g}x ideal", ratio <= o.profile.target
        elif clean is not None:
            target = f"<= {FAULTS_VS_CLEAN:g}x clean ({o.makespan / clean.makespan:.2f}x)"
            met = o.makespan <= FAULTS_VS_CLEAN * clean.makespan
        else:
            target, met = f"<= {FAULTS_VS_CLEAN:g}x clean (not run)", True
        met = met and o.refused <= TARGET_429 * setup.requests and o.succeeded == setup.requests
        if not met:
            missed.append(o.profile.name)
        cells = [
            o.profile.name,
            o.profile.describe(),
            f"{ideal:.1f}",
            f"{o.makespan:.2f}",
            f"{ratio:.3f}x",
            target + ("" if met else " NOT MET"),
            f"{o.refused} ({o.refused / setup.requests:.1%})",
            f"{o.cpu_s:.2f}",
            str(o.succeeded),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if baseline is not None and clean is not None:
        lines += [
            "",
            f"clean against the no-limit baseline of the same run: {clean.makespan / baseline.makespan:.3f}x "
            f"(what learning and spending the server's bucket costs over sending unpaced; the rest of "
            f"clean's distance from the ideal is this machine's CPU)",
        ]
    lines += [
        "",
        f"429s target: <= {TARGET_429:.0%} of requests in every profile; every job must succeed.",
        "targets: " + (f"NOT MET in {', '.join(missed)}" if missed else "all met"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ratelimit", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--profiles", default=",".join(PROFILES), help=f"comma list of: {', '.join(PROFILES)}"
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds until a reply")
    parser.add_argument("--words", type=int, default=20, help="words in a reply")
    parser.add_argument("--write", type=Path, help="also write the result (Markdown) to this file")
    args = parser.parse_args(argv)
    setup = Setup(args.requests, args.concurrency, args.latency, args.words)
    outcomes = []
    for name in args.profiles.split(","):
        profile = PROFILES[name]
        with FakeServer(setup, profile) as base_url:
            outcome = run_profile(setup, profile, base_url)
        outcomes.append(outcome)
        print(
            f"{name}: {outcome.makespan:.2f} s ({outcome.makespan / setup.ideal(profile):.3f}x ideal), "
            f"{outcome.refused} 429s, {outcome.cpu_s:.2f} s CPU",
            flush=True,
        )
    text = report(setup, outcomes)
    print("\n" + text)
    if args.write is not None:
        command = "python -m benchmarks.ratelimit " + " ".join(argv if argv is not None else sys.argv[1:])
        args.write.write_text(f"# Rate-limit profiles\n\nCommand: `{command.strip()}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
