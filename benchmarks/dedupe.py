"""``python -m benchmarks.dedupe [--jobs N] [--repeats R]``: what sending identical requests once costs.

Three measures, each against its baseline in the same process (so contention from other work on
the machine affects both alike), printed as a Markdown table:

* the bookkeeping alone (:class:`~orchestrator.run.dedupe.Dedupe`: every job announced and
  ended, all requests distinct) on and off, in microseconds per job, and the memory it keeps per
  distinct request;
* a whole batch on ``sim`` (no delays, no log) of distinct prompts, dedupe on and off, CPU per
  job (the cost every batch pays for the rule);
* the same batch where every prompt appears twice: CPU per job and attempts, on and off.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import timeit
import tracemalloc

import trio

from orchestrator.config.jobfile import build_batch
from orchestrator.events import JobSucceeded
from orchestrator.run.batch import execute
from orchestrator.run.dedupe import Dedupe
from orchestrator.spec import BatchSpec


def bookkeeping(jobs: int, repeats: int) -> dict[str, float]:
    hashes = [f"{i:016x}" for i in range(jobs)]
    ends = [JobSucceeded(attempts=1) for _ in hashes]

    def run(enabled: bool) -> Dedupe[None]:
        dedupe: Dedupe[None] = Dedupe(enabled)
        for h in hashes:
            dedupe.announce(None, h, h)
        for h, end in zip(hashes, ends, strict=True):
            dedupe.leader_ended(h, end)
        return dedupe

    on = min(timeit.repeat(lambda: run(True), number=1, repeat=repeats)) / jobs * 1e6
    off = min(timeit.repeat(lambda: run(False), number=1, repeat=repeats)) / jobs * 1e6
    tracemalloc.start()
    kept = run(True)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return {"on": on, "off": off, "bytes": held / jobs}


def _spec(prompts: list[str], dedupe: bool) -> BatchSpec:
    return build_batch(
        prompts,
        {
            "backend": "sim",
            "concurrency": 500,
            "dedupe": dedupe,
            "sim": {"ttft": 0, "tokens_per_s": 0, "reply_tokens": 2},
        },
    )


def batch_cpu(prompts: list[str], repeats: int) -> dict[bool, tuple[list[float], int]]:
    """CPU microseconds per job of each run, dedupe on and off taking turns; and the attempts."""
    specs = {dedupe: _spec(prompts, dedupe) for dedupe in (True, False)}
    found: dict[bool, tuple[list[float], int]] = {True: ([], 0), False: ([], 0)}
    for n in range(repeats):
        for dedupe in (True, False) if n % 2 == 0 else (False, True):
            gc.collect()
            start = time.process_time()
            result = trio.run(lambda d=dedupe: execute(specs[d], keep_text=False))  # type: ignore[misc]
            found[dedupe][0].append((time.process_time() - start) / len(prompts) * 1e6)
            found[dedupe] = (found[dedupe][0], result.summary.attempts)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    jobs, repeats = args.jobs, args.repeats
    kept = bookkeeping(jobs * 5, repeats)
    distinct = batch_cpu([f"question {i}" for i in range(jobs)], repeats)
    twice = batch_cpu([f"question {i // 2}" for i in range(jobs)], repeats)
    print(f"{jobs:,} jobs on sim (concurrency 500, no delays, no log), {repeats} runs each, taking turns\n")
    print("| measure | dedupe on | dedupe off | on / off |")
    print("|---|---:|---:|---:|")
    print(
        f"| bookkeeping alone, µs per job (best of {repeats}, {jobs * 5:,} jobs) | {kept['on']:.2f} "
        f"| {kept['off']:.2f} | |"
    )
    print(f"| memory kept per distinct request, bytes | {kept['bytes']:.0f} | 0 | |")
    for label, found in (("distinct prompts", distinct), ("every prompt twice", twice)):
        on, off = statistics.median(found[True][0]), statistics.median(found[False][0])
        print(f"| {label}: CPU µs per job (median) | {on:.1f} | {off:.1f} | {on / off:.3f} |")
        print(f"| {label}: attempts | {found[True][1]:,} | {found[False][1]:,} | |")


if __name__ == "__main__":
    main()
