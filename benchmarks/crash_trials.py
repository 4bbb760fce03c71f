"""Kill -9 trials: a real ``orchestrate`` process is killed at a random moment, then resumed.

After each trial, across the whole log, every job must have succeeded exactly once: none lost,
none paid for twice. ``python -m benchmarks.crash_trials --trials 100`` runs many; the test suite
runs a seeded handful of the same function.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import attrs
import orjson

ROOT = Path(__file__).resolve().parent.parent

JOB_FILE = """\
prompts_file = "{prompts}"
[defaults]
backend = "sim"
concurrency = {concurrency}
seed = {seed}
[defaults.sim]
ttft = 0.05
latency_jitter = 0.9
tokens_per_s = 200
reply_tokens = 4
reply_tokens_max = 12
"""


@attrs.frozen
class TrialResult:
    seed: int
    jobs: int
    killed_after: int  # terminal events seen in the log before the kill
    succeeded_once: int
    lost: list[str]
    duplicated: list[str]
    resume_exit: int

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated and self.resume_exit == 0


def _orchestrate(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _terminal_count(log: Path) -> int:
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return 0
    return data.count(b'"kind":"job_succeeded"') + data.count(b'"kind":"job_failed"')


def run_trial(seed: int, workdir: Path, *, jobs: int = 200, concurrency: int = 40) -> TrialResult:
    """Run, kill -9 once a seeded number of jobs have finished, resume, and check the log."""
    rng = random.Random(seed)
    job_file = workdir / f"trial-{seed}.toml"
    log = workdir / f"trial-{seed}.jsonl"
    prompts = workdir / f"trial-{seed}.jsonl.prompts"
    prompts.write_text("".join(orjson.dumps(f"prompt {seed}-{i}").decode() + "\n" for i in range(jobs)))
    job_file.write_text(JOB_FILE.format(concurrency=concurrency, seed=seed, prompts=prompts.name))
    kill_after = rng.randrange(0, jobs)
    proc = subprocess.Popen(
        _orchestrate(str(job_file), "--log", str(log), "-q"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and _terminal_count(log) < kill_after and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_after = _terminal_count(log)
    resumed = subprocess.run(
        _orchestrate(str(job_file), "--resume", str(log), "-q"), env=_env(), capture_output=True, timeout=120
    )
    succeeded = Counter(
        obj["job"]
        for obj in map(orjson.loads, filter(None, log.read_bytes().split(b"\n")))
        if obj.get("kind") == "job_succeeded"
    )
    all_ids = {
        obj["job"]
        for obj in map(orjson.loads, filter(None, log.read_bytes().split(b"\n")))
        if obj.get("kind") == "job_queued"
    }
    return TrialResult(
        seed=seed,
        jobs=len(all_ids),
        killed_after=killed_after,
        succeeded_once=sum(1 for n in succeeded.values() if n == 1),
        lost=sorted(all_ids - set(succeeded)),
        duplicated=sorted(job for job, n in succeeded.items() if n > 1),
        resume_exit=resumed.returncode,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args(argv)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seed, args.seed + args.trials):
            result = run_trial(seed, Path(tmp), jobs=args.jobs)
            failures += not result.ok
            status = "ok" if result.ok else f"FAILED lost={result.lost[:5]} dup={result.duplicated[:5]}"
            print(f"trial {seed}: killed after {result.killed_after}/{args.jobs} jobs, {status}", flush=True)
    print(f"{args.trials - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
