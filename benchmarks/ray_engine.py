"""The Ray engine against the local engine, in the same run: makespan, overhead, events/s.

    python -m benchmarks.ray_engine [--jobs 10000] [--concurrency 256] [--write RESULT.md]

Both engines run the same ``sim`` batch (each reply after ``--latency`` seconds, its tokens at
once) at the same concurrency; the Ray engine on a local Ray instance of 2 CPUs that the
engine starts for the run (on 127.0.0.1: see ``loopback``). Ideal makespan:
``ceil(N / C) * latency``. Ray's overhead per job is its extra makespan over the local engine's
times ``C / N`` (the time each slot loses per job); events/s is every event the driver tagged
and logged, over the makespan. Start-up (Ray's instance, its first workers) is reported apart
and not counted in the makespan.

Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import trio

from benchmarks.table import cpu_model
from orchestrator.config.library import library_batch
from orchestrator.run.runner import BatchResult, execute


def loopback() -> None:
    """Keep Ray on 127.0.0.1, without usage statistics or a cloud metadata probe."""
    home = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    os.environ.update(
        {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(home)}
    )


class Counting:
    def __init__(self) -> None:
        self.events = 0

    async def deliver(self, batch: object) -> None:
        self.events += len(batch)  # type: ignore[arg-type]


def run(jobs: int, concurrency: int, latency: float, engine: object) -> tuple[BatchResult, int]:
    spec = library_batch(
        "bench",
        [f"question {i}" for i in range(jobs)],
        {
            "backend": "sim",
            "concurrency": concurrency,
            "seed": 1,
            "options": {"ttft": latency, "tokens_per_s": 0.0, "reply_tokens": 8},
        },
    )
    counting = Counting()
    result = trio.run(
        lambda: execute(spec, subscribers=[counting], keep_text=False, engine=engine)  # type: ignore[arg-type]
    )
    return result, counting.events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--write", metavar="FILE")
    args = parser.parse_args(argv)
    loopback()
    import ray

    from orchestrator.engines.ray import LOCAL_CPUS, RayEngine

    n, c, latency = args.jobs, args.concurrency, args.latency
    ideal = math.ceil(n / c) * latency
    local, local_events = run(n, c, latency, None)
    start = time.perf_counter()
    ray.init(
        num_cpus=LOCAL_CPUS,
        resources={"llm_slots": c},
        object_store_memory=128 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    warm, _ = run(2 * c, c, latency, RayEngine())  # its workers started, as on a running cluster
    startup = time.perf_counter() - start
    engine = RayEngine()
    remote, remote_events = run(n, c, latency, engine)
    ray.shutdown()
    overhead_ms = (remote.summary.wall_s - local.summary.wall_s) * c / n * 1000
    lines = [
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs (shared), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}, ray {ray.__version__}",
        f"workload: {n} sim jobs, concurrency {c}, replies after {latency:g} s; Ray: a local instance, "
        f"{LOCAL_CPUS} CPUs, {engine.shards_submitted} shards",
        f"ideal makespan: {ideal:.2f} s; Ray's start-up and first workers (not in it): {startup:.1f} s",
        "",
        "| engine | makespan s | vs ideal | events | events/s through the driver | succeeded |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, result, events in (("local", local, local_events), ("ray", remote, remote_events)):
        s = result.summary
        lines.append(
            f"| {name} | {s.wall_s:.2f} | {s.wall_s / ideal:.2f}x | {events} | {events / s.wall_s:,.0f} "
            f"| {s.succeeded} |"
        )
    lines += ["", f"Ray's overhead per job (slot time): {overhead_ms:.1f} ms"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).write_text(text + "\n")
    return 0 if remote.summary.succeeded == n and warm.ok else 1


if __name__ == "__main__":
    sys.exit(main())
