"""Crash trials: a real ``orchestrate`` process is killed at a random moment, then resumed; or
other runs race it for its log; or it is pointed at files that are not logs.

After each trial, across the whole log, every job must have succeeded exactly once: none lost,
none paid for twice. A run that finds the log in use exits 2 naming the holder's pid; a file
that is not a log is refused and left byte for byte as it was. ``python -m
benchmarks.crash_trials --trials 100`` runs many of each; the test suite runs a seeded handful
of the same functions.
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

from orchestrator.record.lines import records_of

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
    results_once: int | None = None
    """With a results file: jobs it holds exactly once after the resume (None: none written)."""
    results_repeated: list[str] = attrs.Factory(list)
    results_as_exported: bool | None = None
    """Whether the results file is byte for byte what ``orchestrate export`` writes from the log."""

    @property
    def ok(self) -> bool:
        results_ok = self.results_once in (None, self.jobs) and not self.results_repeated
        return not self.lost and not self.duplicated and self.resume_exit == 0 and results_ok


def _orchestrate(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _terminal_count(log: Path) -> int:
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return 0
    # a kind is a quoted string of its own, whether it opens a line or is in its "then" list
    return data.count(b'"job_succeeded"') + data.count(b'"job_failed"')


def start_run(*args: str) -> subprocess.Popen[bytes]:
    """``orchestrate ARGS`` started in the background, its output discarded."""
    return subprocess.Popen(
        _orchestrate(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_for_ends(proc: subprocess.Popen[bytes], log: Path, ends: int) -> None:
    """Returns once ``log`` holds ``ends`` terminal events, ``proc`` has exited, or 60 s passed."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and _terminal_count(log) < ends and time.monotonic() < deadline:
        time.sleep(0.002)


def kill_after_ends(proc: subprocess.Popen[bytes], log: Path, ends: int) -> None:
    """``kill -9`` of ``proc`` (if still running) once ``log`` holds ``ends`` terminal events."""
    try:
        wait_for_ends(proc, log, ends)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _write_batch(seed: int, workdir: Path, jobs: int, concurrency: int, name: str) -> tuple[Path, Path]:
    job_file = workdir / f"{name}-{seed}.toml"
    log = workdir / f"{name}-{seed}.jsonl"
    prompts = workdir / f"{name}-{seed}.jsonl.prompts"
    prompts.write_text("".join(orjson.dumps(f"prompt {seed}-{i}").decode() + "\n" for i in range(jobs)))
    job_file.write_text(JOB_FILE.format(concurrency=concurrency, seed=seed, prompts=prompts.name))
    return job_file, log


def _outcomes(log: Path) -> tuple[int, int, list[str], list[str]]:
    """Jobs in the log, jobs that succeeded exactly once, jobs lost, jobs that succeeded twice."""
    lines = [orjson.loads(line) for line in log.read_bytes().split(b"\n") if line.strip()]
    records = [(obj.get("job"), kind) for obj in lines for kind, _ in records_of(obj)]
    succeeded = Counter(job for job, kind in records if kind == "job_succeeded")
    all_ids = {job for job, kind in records if kind == "job_queued"}
    return (
        len(all_ids),
        sum(1 for n in succeeded.values() if n == 1),
        sorted(all_ids - set(succeeded)),
        sorted(job for job, n in succeeded.items() if n > 1),
    )


def run_trial(
    seed: int, workdir: Path, *, jobs: int = 200, concurrency: int = 40, results: bool = False
) -> TrialResult:
    """Run, kill -9 once a seeded number of jobs have finished, resume, and check the log (and,
    with ``results``, the JSONL results file both runs write)."""
    rng = random.Random(seed)
    job_file, log = _write_batch(seed, workdir, jobs, concurrency, "trial")
    results_file = log.with_suffix(".results.jsonl")
    results_args = ("--results", str(results_file)) if results else ()
    kill_after = rng.randrange(0, jobs)
    proc = start_run(str(job_file), "--log", str(log), "-q", *results_args)
    kill_after_ends(proc, log, kill_after)
    killed_after = _terminal_count(log)
    resumed = subprocess.run(
        _orchestrate(str(job_file), "--resume", str(log), "-q", *results_args),
        env=_env(),
        capture_output=True,
        timeout=120,
    )
    total, once, lost, duplicated = _outcomes(log)
    checked = _check_results(results_file, log) if results else {}
    return TrialResult(
        seed=seed,
        jobs=total,
        killed_after=killed_after,
        succeeded_once=once,
        lost=lost,
        duplicated=duplicated,
        resume_exit=resumed.returncode,
        **checked,
    )


def _check_results(results_file: Path, log: Path) -> dict[str, object]:
    """Jobs the results file holds once, those it holds more than once, and whether it equals
    the export of the log."""
    rows = [orjson.loads(line) for line in results_file.read_bytes().splitlines()]
    counts = Counter(row["id"] for row in rows if row["status"] == "succeeded")
    exported = results_file.with_suffix(".exported.jsonl")
    subprocess.run(
        _orchestrate("export", str(log), "-o", str(exported)), env=_env(), capture_output=True, timeout=120
    )
    return {
        "results_once": sum(1 for n in counts.values() if n == 1) if len(rows) == len(counts) else -1,
        "results_repeated": sorted(job for job, n in Counter(row["id"] for row in rows).items() if n > 1),
        "results_as_exported": exported.exists() and exported.read_bytes() == results_file.read_bytes(),
    }


@attrs.frozen
class RaceResult:
    seed: int
    jobs: int
    killed: bool  # the first run was killed -9 before the others raced for the log
    exits: tuple[int, ...]  # of the two racing runs
    refusals_ok: bool  # every run turned away (exit 2) named a pid holding the log
    succeeded_once: int
    lost: list[str]
    duplicated: list[str]
    final_exit: int

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.duplicated
            and self.refusals_ok
            and set(self.exits) <= {0, 2}
            and self.final_exit == 0
        )


def run_race_trial(seed: int, workdir: Path, *, jobs: int = 200, concurrency: int = 40) -> RaceResult:
    """A run, and two resumes started together at a seeded moment while it runs (or after a
    ``kill -9`` of it): at most one of them may write the log at a time, the others exit 2.
    A last resume finishes what is left; every job must have succeeded exactly once."""
    rng = random.Random(seed)
    job_file, log = _write_batch(seed, workdir, jobs, concurrency, "race")
    start_after = rng.randrange(0, jobs // 2)
    killed = rng.random() < 0.5
    first = start_run(str(job_file), "--log", str(log), "-q")
    wait_for_ends(first, log, start_after)
    if killed and first.poll() is None:
        os.kill(first.pid, signal.SIGKILL)
    racers = [
        subprocess.Popen(
            _orchestrate(str(job_file), "--resume", str(log), "-q"),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    errors = [racer.communicate(timeout=120)[1] for racer in racers]
    first.wait(timeout=120)
    exits = tuple(racer.returncode for racer in racers)
    refusals_ok = all(
        b"in use by another run (pid " in err for err, code in zip(errors, exits, strict=True) if code == 2
    )
    final = subprocess.run(
        _orchestrate(str(job_file), "--resume", str(log), "-q"), env=_env(), capture_output=True, timeout=120
    )
    total, once, lost, duplicated = _outcomes(log)
    return RaceResult(seed, total, killed, exits, refusals_ok, once, lost, duplicated, final.returncode)


NOT_LOGS = {
    "job file": None,  # the trial's own job file
    "prompts file": '"first prompt"\n{"prompt": "second"}\n',
    "prompts file without a final newline": '{"prompt": "only one"}',
    "notes": "remember to resume the batch tomorrow\n",
}


def run_not_a_log_trial(workdir: Path) -> list[str]:
    """Point ``--log``, ``--resume`` and ``--retry-failed`` at files that are not logs: each must
    exit 2 and leave the file as it was. Returns the failures (empty: all held)."""
    job_file, _ = _write_batch(0, workdir, 3, 2, "not-a-log")
    failures = []
    for name, content in NOT_LOGS.items():
        path = job_file if content is None else workdir / f"not-a-log {name}"
        if content is not None:
            path.write_text(content)
        before = path.read_bytes()
        for option in (["--log"], ["--resume"], ["--retry-failed", "--log"]):
            proc = subprocess.run(
                _orchestrate(str(job_file), *option, str(path), "-q", "--force"),
                env=_env(),
                capture_output=True,
                timeout=60,
            )
            if proc.returncode != 2 or path.read_bytes() != before or b"Traceback" in proc.stderr:
                failures.append(f"{name} with {' '.join(option)}: exit {proc.returncode}")
    return failures


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
            race = run_race_trial(seed, Path(tmp), jobs=args.jobs)
            failures += not race.ok
            status = "ok" if race.ok else f"FAILED {race}"
            how = "after kill -9" if race.killed else "while it ran"
            print(f"race {seed}: two resumes {how}, exits {race.exits}, {status}", flush=True)
        refused = run_not_a_log_trial(Path(tmp))
        failures += len(refused)
        print(f"not a log: {'ok' if not refused else 'FAILED ' + '; '.join(refused)}")
    print(f"{2 * args.trials + 1 - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
