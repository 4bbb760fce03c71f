"""Tokens per second of the ``local`` backend: through the orchestrator vs xllamacpp's own loop.

Both sides load the same model with the same server parameters and stream the same request
(temperature 0, ``ignore_eos`` so every reply is exactly ``--tokens`` long). "raw" calls
``Server.handle_chat_completions`` from plain threads with a callback that only counts; the
orchestrator runs a real batch (``run_batch(..., backend="local")``, event bus, aggregation) and
is timed from its events, so its model load is not counted. "tok/CPU-s" divides by the CPU
time of the whole process (decode thread included) over the same span: on a busy machine it is
steadier than wall time and shows the orchestrator's own cost directly. Every run starts from a
freshly loaded server (no prompt cached from an earlier run), and runs alternate raw and
orchestrator so that background load hits both alike; the table shows medians.

    python -m benchmarks.local_tokens [--tokens 256] [--rounds 3] [--jobs 4] [--slots 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs
import orjson

from orchestrator import run_batch
from orchestrator.backends.local.backend import Options, Settings, _load_server, build_request
from orchestrator.backends.local.backend import model as local_model
from orchestrator.events import AttemptStarted, JobSucceeded, Tagged
from orchestrator.spec import JobSpec

PROMPTS = (
    "Write a long story about a dragon.",
    "Explain how a bicycle works.",
    "Describe a walk through a forest.",
    "Tell me about the history of tea.",
)


@attrs.frozen
class Scenario:
    name: str
    jobs: int
    slots: int


@attrs.frozen
class Measured:
    """Tokens generated, wall seconds, and CPU seconds the whole process used meanwhile."""

    tokens: int
    seconds: float
    cpu_seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_seconds


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: the decode loop included
    return usage.ru_utime + usage.ru_stime


def _spec(prompt: str, tokens: int, index: int) -> JobSpec:
    return JobSpec(
        id=f"j{index}",
        prompt=prompt,
        backend="local",
        max_tokens=tokens,
        temperature=0.0,
        seed=1,
        options=Options(ignore_eos=True),
    )


def run_raw(server: Any, scenario: Scenario, tokens: int) -> Measured:
    """One request per job, each from its own thread; the server queues those beyond its slots."""
    counts = [0] * scenario.jobs

    def one(index: int) -> None:
        request = orjson.dumps(
            build_request(_spec(PROMPTS[index % len(PROMPTS)], tokens, index), Options())
        ).decode()

        def on_chunk(chunk: str) -> bool:
            if '"content":"' in chunk:  # a token; cheaper than parsing, as a bare loop would be
                counts[index] += 1
            return False

        server.handle_chat_completions(request, on_chunk)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(scenario.jobs)]
    started, cpu = time.perf_counter(), _cpu()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Measured(sum(counts), time.perf_counter() - started, _cpu() - cpu)


def run_orchestrated(scenario: Scenario, tokens: int) -> Measured:
    """A real batch; timed from the first attempt's start to the last job's success."""
    times: list[float] = []
    cpu: list[float] = []

    def on_event(tagged: Tagged) -> None:
        if isinstance(tagged.event, AttemptStarted | JobSucceeded):
            times.append(tagged.ts)
            cpu.append(_cpu())

    result = run_batch(
        [PROMPTS[i % len(PROMPTS)] for i in range(scenario.jobs)],
        backend="local",
        max_tokens=tokens,
        temperature=0,
        seed=1,
        options={"ignore_eos": True},
        backend_settings={"local": {"slots": scenario.slots}},
        dedupe=False,  # the prompts repeat: every job is a request to measure
        on_event=on_event,
        keep_text=False,
    )
    assert result.ok, result.summary
    return Measured(result.summary.tokens.output, max(times) - min(times), max(cpu) - min(cpu))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="reply length of every job")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the concurrent scenario")
    parser.add_argument("--slots", type=int, default=2, help="slots in the concurrent scenario")
    args = parser.parse_args(argv)
    model, problems = local_model.resolve(local_model.DEFAULT_MODEL, None)
    if model is None:
        raise SystemExit("\n".join(problems))
    scenarios = [
        Scenario("1 job, 1 slot", 1, 1),
        Scenario(f"{args.jobs} jobs, {args.slots} slots", args.jobs, args.slots),
    ]
    raw: dict[str, list[Measured]] = {s.name: [] for s in scenarios}
    orchestrated: dict[str, list[Measured]] = {s.name: [] for s in scenarios}
    with tempfile.TemporaryDirectory() as directory:
        sockets = (os.path.join(directory, f"raw-{n}.sock") for n in itertools.count())
        run_raw(_load_server(model, Settings(slots=1), 1, next(sockets)), Scenario("warm-up", 1, 1), 8)
        for _ in range(args.rounds):
            for scenario in scenarios:
                # A fresh server for every raw run, as every batch gets: no prompt cached from before.
                server = _load_server(model, Settings(slots=scenario.slots), 1, next(sockets))
                raw[scenario.name].append(run_raw(server, scenario, args.tokens))
                del server
                orchestrated[scenario.name].append(run_orchestrated(scenario, args.tokens))
    cpus = os.cpu_count()
    print(f"model {model.name}, {args.tokens} tokens per job, 1 thread, {cpus} cpus, {args.rounds} rounds")
    print("| scenario | raw tok/s | orch. tok/s | ratio | raw tok/CPU-s | orch. tok/CPU-s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for scenario in scenarios:
        r, o = raw[scenario.name], orchestrated[scenario.name]
        wall_r = statistics.median(m.tokens_per_s for m in r)
        wall_o = statistics.median(m.tokens_per_s for m in o)
        cpu_r = statistics.median(m.tokens_per_cpu_s for m in r)
        cpu_o = statistics.median(m.tokens_per_cpu_s for m in o)
        print(
            f"| {scenario.name} | {wall_r:.1f} | {wall_o:.1f} | {wall_o / wall_r:.2f} "
            f"| {cpu_r:.1f} | {cpu_o:.1f} | {cpu_o / cpu_r:.2f} |"
        )
    for scenario in scenarios:
        pairs = zip(raw[scenario.name], orchestrated[scenario.name], strict=True)
        rounds = ", ".join(f"{a.tokens_per_s:.1f}/{b.tokens_per_s:.1f}" for a, b in pairs)
        print(f"wall tok/s per round (raw/orchestrator), {scenario.name}: {rounds}")


if __name__ == "__main__":
    main()
