"""How soon a batch stops when asked: the CLI after Ctrl-C or SIGTERM, the local backend after a
cancel. The tests prove that a stop is graceful (running jobs cancelled, the rest skipped, no
thread left); how long it takes is a timing claim, so it is measured here.

    python -m benchmarks.stop [--quick] [--local]

``--local`` also measures the ``local`` backend (needs its model): from the cancel to the
return of ``stream`` while it generates, the follow-up request on the one slot it freed, and a
cancel while a long prompt is being read (the rest of one 128-token prompt batch).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from benchmarks.table import Row, Section

ROOT = Path(__file__).resolve().parent.parent
SLOW_BATCH = (
    "[defaults]\nconcurrency = 3\n[defaults.sim]\nttft = 0.2\ntokens_per_s = 5\nreply_tokens = 50\n"
    + "".join(f'[[jobs]]\nid = "j{i}"\nprompt = "p{i}"\n' for i in range(8))
)


def signal_to_exit(signum: int, workdir: Path) -> float:
    """Seconds from ``signum`` to the exit of ``orchestrate`` running a batch of slow sim jobs."""
    jobs = workdir / "slow.toml"
    jobs.write_text(SLOW_BATCH)
    log = workdir / f"run-{signum}.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", str(jobs), "--log", str(log)],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + 30
    while not (log.exists() and b"text_delta" in log.read_bytes()):
        if time.monotonic() > end:
            proc.kill()
            raise RuntimeError("the batch did not start streaming within 30 s")
        time.sleep(0.01)
    sent = time.perf_counter()
    proc.send_signal(signum)
    proc.wait(timeout=30)
    return time.perf_counter() - sent


def bench_stop(quick: bool) -> Section:
    repeats = 1 if quick else 5
    times: dict[str, list[float]] = {"SIGINT": [], "SIGTERM": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            times["SIGINT"].append(signal_to_exit(signal.SIGINT, Path(tmp)))
            times["SIGTERM"].append(signal_to_exit(signal.SIGTERM, Path(tmp)))
    worst = max(max(t) for t in times.values())
    return Section(
        "Stopping a batch",
        [Row(f"{name} to exit", t, "s") for name, t in times.items()],
        ratio=(worst, "<= 2", None),
        ratio_label="slowest stop, seconds",
        note=f"{repeats} run(s) each of orchestrate with 3 running and 5 waiting sim jobs.",
    )


async def local_cancel() -> list[Row]:
    """The local backend's stop times (needs the model)."""
    from orchestrator.backends.local.backend import Options, Settings, open_local
    from orchestrator.events import StreamEvent, TextDelta
    from orchestrator.spec import JobSpec

    def job(prompt: str, max_tokens: int, **options: object) -> JobSpec:
        return JobSpec(
            id="j", prompt=prompt, backend="local", max_tokens=max_tokens, temperature=0.0, seed=1,
            options=Options(**options),  # type: ignore[arg-type]
        )  # fmt: skip

    async def ignore(event: StreamEvent) -> None:
        await trio.lowlevel.checkpoint()

    long = job("Write a long story about a dragon.", 400, ignore_eos=True)
    async with open_local(Settings(slots=1), seed=0) as backend:
        cancelled_at = 0.0
        deltas = 0
        with trio.CancelScope() as scope:

            async def emit(event: StreamEvent) -> None:
                nonlocal cancelled_at, deltas
                await trio.lowlevel.checkpoint()
                deltas += isinstance(event, TextDelta)
                if deltas == 3:
                    cancelled_at = time.perf_counter()
                    scope.cancel()

            await backend.stream(long, 1, emit)
        cancel = time.perf_counter() - cancelled_at
        started = time.perf_counter()
        await backend.stream(job("Say hi.", 4), 1, ignore)
        follow_up = time.perf_counter() - started
    reading = job("Summarize this. " + "The cat sat on the mat. " * 200, 4)
    async with open_local(Settings(slots=1, n_ctx=2048), seed=0) as backend:
        started = time.perf_counter()
        with trio.move_on_after(0.3):
            await backend.stream(reading, 1, ignore)
        prompt_cancel = time.perf_counter() - started
    return [
        Row("cancel while generating to return (target < 0.5)", [cancel], "s"),
        Row("follow-up on the freed slot (target < 3)", [follow_up], "s"),
        Row("cancel at 0.3 s while reading a long prompt to return (target < 5)", [prompt_cancel], "s"),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--local", action="store_true", help="also measure the local backend")
    args = parser.parse_args(argv)
    print(bench_stop(args.quick).markdown())
    if args.local:
        rows = trio.run(local_cancel)
        print(Section("Stopping the local backend", rows, note="One run each.").markdown())


if __name__ == "__main__":
    main()
