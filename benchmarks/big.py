"""Big batches and big logs: how long a stop takes at a million jobs, what ``report`` and
``--resume`` cost on logs of 100,000 and 1,000,000 jobs, and how soon a million-job job file
sends its first request.

``python -m benchmarks stop bigreport bigresume firstrequest`` (or ``python -m benchmarks.big``). Each figure
has a baseline measured in the same run: for a stop, writing the two lines per never-started job
that a per-job stop had to write; for a log, one plain ``orjson.loads`` pass over the same file
(and for ``report`` and ``export``, the floors: the least a Python reader can do, see
:data:`_LEAST_SUMMARY`).
"""

from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import attrs
import orjson
import trio

from benchmarks.table import Row, Section
from orchestrator import codec
from orchestrator.config.jobfile import build_batch
from orchestrator.events import (
    AttemptStarted,
    BatchFinished,
    BatchStarted,
    JobQueued,
    JobSkipped,
    JobSucceeded,
    SessionStarted,
    StreamFinished,
    Tagged,
    TextDelta,
    Tokens,
    UsageReported,
)
from orchestrator.record.aggregate import Aggregator
from orchestrator.record.coalesce import group_lines
from orchestrator.record.lines import LogLines
from orchestrator.record.log import HEADER_KIND, LogHeader
from orchestrator.run.batch import execute
from orchestrator.run.control import RunControl
from orchestrator.spec import BatchSpec

ROOT = Path(__file__).resolve().parent.parent


def sim_batch(jobs: int, log: str | None, *, concurrency: int = 1000) -> BatchSpec:
    """``jobs`` sim jobs (ids ``j0``...), built from one resolved job: building a million through
    the job-file checker would measure the loader, not what is benchmarked here."""
    base = build_batch(
        ["x"],
        {
            "backend": "sim",
            "concurrency": concurrency,
            **({"log": log} if log else {}),
            "sim": {"ttft": 0.5, "tokens_per_s": 0, "reply_tokens": 4},
            "dedupe": False,  # one request, sent by every job: that is the load measured
        },
    )
    template = base.jobs[0]
    return attrs.evolve(base, jobs=tuple(attrs.evolve(template, id=f"j{i}") for i in range(jobs)))


# --- a stop ------------------------------------------------------------------------------------


async def _run_and_stop(spec: BatchSpec, after: float) -> tuple[float, int]:
    """Run ``spec``, stop it ``after`` seconds in; (seconds from the stop to the return, skipped)."""
    control = RunControl()
    asked = 0.0

    async def stop() -> None:
        nonlocal asked
        await trio.sleep(after)
        asked = time.perf_counter()
        control.cancel("interrupted")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop)
        result = await execute(spec, control=control, keep_text=False)
    return time.perf_counter() - asked, result.summary.skipped


def _per_job_lines(path: Path, jobs: int) -> float:
    """What a per-job stop wrote: a ``job_queued`` and a ``job_skipped`` line per job."""
    start = time.perf_counter()
    queued = JobQueued(backend="sim", model=None, content_hash="0123456789abcdef")
    skipped = JobSkipped(reason="interrupted")
    encode = codec.encode_tagged
    with open(path, "wb") as f:
        for i in range(jobs):
            job = f"j{i}"
            f.write(encode(Tagged(job, 0, 0, 1.0, queued)) + encode(Tagged(job, 0, 1, 1.0, skipped)))
        os.fsync(f.fileno())
    return time.perf_counter() - start


def bench_stop(quick: bool) -> Section:
    big, small = (20_000, 1_000) if quick else (1_000_000, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        big_s, big_skipped = trio.run(_run_and_stop, sim_batch(big, f"{tmp}/big.jsonl"), 2.0)
        small_s, _ = trio.run(_run_and_stop, sim_batch(small, f"{tmp}/small.jsonl"), 1.0)
        baseline = _per_job_lines(Path(tmp) / "per-job.jsonl", big_skipped)
    return Section(
        "A stop at any size",
        [
            Row(f"stop of a {big:,}-job batch, 2 s in ({big_skipped:,} never started)", [big_s], "s"),
            Row(f"stop of a {small:,}-job batch, 1 s in", [small_s], "s"),
            Row(f"baseline: writing job_queued + job_skipped for {big_skipped:,} jobs", [baseline], "s"),
        ],
        ratio=(big_s, "<= 1 s", None),
        ratio_label=f"stop time at {big:,} jobs, s",
        note="Stop = from the stop request (what Ctrl-C does) to the batch's return: running jobs "
        "cancelled, one `jobs_skipped` for every job that never started, `batch_finished`, the log "
        "fsynced. sim jobs of 0.5 s at concurrency 1,000, log on disk. The baseline is only the "
        "writing a per-job stop had to do, with the same codec, no bus.",
    )


# --- big logs ----------------------------------------------------------------------------------


def write_log(path: Path, jobs: int) -> None:
    """A finished run of ``jobs`` sim-like jobs (10 events each, the 4 text deltas one record),
    written with the real codec on the lines the log writer writes when each job's events come
    in one batch: one line a job."""
    aggregator = Aggregator(keep_text=False)
    lines = LogLines()  # as the log writer writes them
    encode = lines.encode_line
    header = LogHeader(codec.LOG_SCHEMA, "0", "bench", "2026-01-01T00:00:00+00:00", None, jobs, {})
    hashes = [job.content_hash for job in sim_batch(1, None).jobs]
    queued = JobQueued(backend="sim", model="sim-1", content_hash=hashes[0])
    tokens = Tokens(8, 4)
    with open(path, "wb") as f:
        f.write(orjson.dumps({"kind": HEADER_KIND, **codec.to_jsonable(header)}) + b"\n")
        started = Tagged(None, 0, 0, 0.0, BatchStarted(run_id="bench", jobs=jobs, started_at="t"))
        f.write(encode([started]))
        chunk: list[Tagged] = []
        for i in range(jobs):
            job, ts = f"j{i}", i * 0.001
            events = [
                queued,
                AttemptStarted(backend="sim"),
                SessionStarted(session_id=f"sim-{job}-1", model="sim-1"),
                TextDelta("the"),
                TextDelta(" quick"),
                TextDelta(" answer"),
                TextDelta(" is"),
                UsageReported(tokens=tokens),
                StreamFinished("end_turn", tokens, 2.8e-5, 0.5, 1, f"sim-{job}-1"),
                JobSucceeded(attempts=1),
            ]
            chunk.extend(Tagged(job, min(n, 1), n, ts, e) for n, e in enumerate(events))
            if len(chunk) >= 10_000:
                aggregator.apply_all(chunk)
                f.write(b"".join(encode(line) for line in group_lines(chunk)))
                chunk = []
        aggregator.apply_all(chunk)
        f.write(b"".join(encode(line) for line in group_lines(chunk)))
        end = jobs * 0.001 + 0.5
        f.write(encode([Tagged(None, 0, 1, end, BatchFinished(summary=aggregator.summary(end)))]))


class Child(NamedTuple):
    """What a fresh process took: wall seconds, its peak resident MiB, its CPU seconds."""

    wall: float
    peak_mib: float
    cpu: float


def _child(code: str, *args: str) -> Child:
    """Run Python ``code`` in a fresh process and measure it (see :class:`Child`).

    The peak is the child's own VmHWM: the rusage of a child counts its parent's memory too
    (Linux carries the high-water mark across fork and exec). CPU time (user + system) is the
    figure to compare on a shared machine: waiting for a core does not count."""
    body = "\n".join("    " + line for line in code.splitlines())
    wrapped = f"import os\ntry:\n{body}\nfinally:\n    {_WRITE_PEAK}\n"
    with tempfile.NamedTemporaryFile("r") as peak:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", wrapped, *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env={**_env(), "BENCH_PEAK": peak.name},
        )
        took = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{code!r} failed: exit {proc.returncode}")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return Child(took, int(peak.read()) / 1024, cpu)


_WRITE_PEAK = (
    "open(os.environ['BENCH_PEAK'], 'w').write(next(x for x in open('/proc/self/status') "
    "if x.startswith('VmHWM:')).split()[1])"
)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith(field + ":")).split()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


_ORJSON_PASS = (
    "import sys, orjson\nwith open(sys.argv[1], 'rb') as f:\n    for line in f:\n        orjson.loads(line)\n"
)
# The floors: the least any Python reader of a log holding each event once can do for a summary
# and for an export, measured beside ours so that the target's distance from them is on record.
# Benchmark baselines, not product code: one orjson pass that walks each job line's records
# (the line's own, then its ``then`` items) and touches the few fields needed; no event objects,
# no checks, no retractions, a record's time from its line's ``ts`` and the ``dt``s before it.
# ``test_benchmarks`` checks that they agree with ``report --json`` and ``export`` on the log
# ``write_log`` writes.

_LEAST_SUMMARY = """\
import sys, orjson
ENDS = {"job_succeeded": "succeeded", "job_failed": "failed", "job_cancelled": "cancelled"}
def fold(path):
    jobs = {}  # job -> [status, attempts, input tokens, output tokens, cost, first start, end (µs)]
    loads, ends = orjson.loads, ENDS
    with open(path, "rb") as f:
        for line in f:
            record = loads(line)
            job = record.get("job")
            if job is None:
                continue  # the header, batch-level lines
            state = jobs.get(job)
            if state is None:
                state = jobs[job] = [None, 0, 0, 0, 0.0, None, None]
            micros = round(record["ts"] * 1e6)
            for item in [(record["kind"], record), *record.get("then", ())]:
                kind, fields = item[0], item[-1]
                if len(item) == 3 or type(fields) is int:
                    micros += item[1]
                if kind == "attempt_started":
                    state[1] += 1
                    if state[5] is None:
                        state[5] = micros
                elif kind == "usage":
                    tokens = fields["tokens"]
                    state[2] += tokens.get("input", 0)
                    state[3] += tokens.get("output", 0)
                elif kind == "stream_finished":
                    state[4] += fields.get("cost_usd", 0.0)
                elif kind in ends:
                    state[0] = ends[kind]
                    state[6] = micros
    return jobs
def summary(jobs):
    counts = {"succeeded": 0, "failed": 0, "cancelled": 0, None: 0}
    attempts = tokens_in = tokens_out = 0
    cost = 0.0
    durations = []
    for status, tried, used_in, used_out, spent, start, end in jobs.values():
        counts[status] += 1
        attempts += tried
        tokens_in += used_in
        tokens_out += used_out
        cost += spent
        if start is not None and end is not None:
            durations.append((end - start) / 1e6)
    durations.sort()
    del counts[None]
    return {
        "jobs": len(jobs), **counts, "attempts": attempts,
        "tokens": {"input": tokens_in, "output": tokens_out}, "cost_usd": cost,
        "latency_p50_s": durations[len(durations) // 2] if durations else 0.0,
        "latency_max_s": durations[-1] if durations else 0.0,
    }
sys.stdout.buffer.write(orjson.dumps(summary(fold(sys.argv[1])), option=orjson.OPT_APPEND_NEWLINE))
"""
"""The least a summary can do: ``python -c _LEAST_SUMMARY LOG`` folds status, attempts, tokens,
cost and duration per job into a dict, then prints the totals (a few of ``report --json``'s)."""

_LEAST_EXPORT = """\
import sys, orjson
ENDS = {"job_succeeded": "succeeded", "job_failed": "failed", "job_cancelled": "cancelled"}
def export(path, out):
    running = {}  # job -> its row so far ("text": the deltas, "duration_s": the first start, µs)
    loads, dumps, newline, ends = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE, ENDS
    with open(path, "rb") as f:
        for line in f:
            record = loads(line)
            job = record.get("job")
            if job is None:
                continue  # the header, batch-level lines
            row = running.get(job)
            if row is None:
                row = running[job] = {
                    "id": job, "status": None, "text": [], "stop_reason": None, "input_tokens": 0,
                    "output_tokens": 0, "cost_usd": None, "duration_s": None, "backend": None, "model": None,
                }
            micros = round(record["ts"] * 1e6)
            for item in [(record["kind"], record), *record.get("then", ())]:
                kind, fields = item[0], item[-1]
                if len(item) == 3 or type(fields) is int:
                    micros += item[1]
                if kind == "text_delta":
                    row["text"].append(fields["text"])
                elif kind == "job_queued":
                    row["backend"] = fields["backend"]
                    row["model"] = fields.get("model")
                elif kind == "attempt_started":
                    row["text"] = []  # the last attempt's text is the answer
                    if row["duration_s"] is None:
                        row["duration_s"] = micros
                elif kind == "usage":
                    tokens = fields["tokens"]
                    row["input_tokens"] += tokens.get("input", 0)
                    row["output_tokens"] += tokens.get("output", 0)
                elif kind == "stream_finished":
                    row["stop_reason"] = fields.get("stop_reason")
                    row["cost_usd"] = fields.get("cost_usd")
                elif kind in ends:
                    row["status"] = ends[kind]
                    row["text"] = "".join(row["text"])
                    start = row["duration_s"]
                    row["duration_s"] = None if start is None else (micros - start) / 1e6
                    out.write(dumps(running.pop(job), option=newline))
with open(sys.argv[2], "wb") as out:
    export(sys.argv[1], out)
"""
"""The least an export can do: ``python -c _LEAST_EXPORT LOG OUT`` writes one JSON line per job
at its end (10 of the results row's 22 columns, those ``write_log``'s jobs fill in)."""

_REPORT = "import sys\nfrom orchestrator.cli.report import main\nsys.exit(main(sys.argv[1:]))"
_EXPORT = "import sys\nfrom orchestrator.cli.export import main\nsys.exit(main(sys.argv[1:]))"


_FLOOR_RUNS = 3


def bench_big_report(quick: bool) -> Section:
    jobs = 5_000 if quick else int(os.environ.get("BENCH_BIGREPORT_JOBS", "100000"))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "big.jsonl"
        write_log(log, jobs)
        size = log.stat().st_size / 2**20
        json_view = _child(_REPORT, str(log), "--json")
        table_view = _child(_REPORT, str(log))
        export = _child(_EXPORT, str(log), "-o", str(Path(tmp) / "out.jsonl"))
        bases, summaries, exports = [], [], []
        for _ in range(_FLOOR_RUNS):  # cheap and short, so noisier: taking turns, medians compared
            bases.append(_child(_ORJSON_PASS, str(log)))
            summaries.append(_child(_LEAST_SUMMARY, str(log)))
            exports.append(_child(_LEAST_EXPORT, str(log), str(Path(tmp) / "least.jsonl")))
    base_cpu = statistics.median(b.cpu for b in bases)
    least_summary = statistics.median(c.cpu for c in summaries)
    least_export = statistics.median(c.cpu for c in exports)
    return Section(
        "report on a big log",
        [
            Row(f"{jobs:,}-job log ({size:,.0f} MiB): report --json, CPU", [json_view.cpu], "s"),
            Row("  its wall time", [json_view.wall], "s"),
            Row("  its peak memory", [json_view.peak_mib], "MiB"),
            Row("report (the table view), CPU", [table_view.cpu], "s"),
            Row("  its peak memory", [table_view.peak_mib], "MiB"),
            Row("export -o results.jsonl, CPU", [export.cpu], "s"),
            Row("  its peak memory", [export.peak_mib], "MiB"),
            Row("baseline: one orjson.loads pass over the file, CPU", [b.cpu for b in bases], "s"),
            Row("  its wall time", [b.wall for b in bases], "s"),
            Row("  its peak memory", [b.peak_mib for b in bases], "MiB"),
            Row("floor: the least summary, CPU", [c.cpu for c in summaries], "s"),
            Row("floor: the least export, CPU", [c.cpu for c in exports], "s"),
        ],
        ratio=(json_view.cpu / base_cpu, "<= 2", None),
        ratio_label="report --json / orjson pass (CPU)",
        extra_ratios=[
            ("export / orjson pass (CPU)", export.cpu / base_cpu, "<= 2"),
            ("floor: least summary / orjson pass (CPU)", least_summary / base_cpu, "(for information)"),
            ("floor: least export / orjson pass (CPU)", least_export / base_cpu, "(for information)"),
            ("report --json / least summary (CPU)", json_view.cpu / least_summary, "(for information)"),
            ("export / least export (CPU)", export.cpu / least_export, "(for information)"),
            ("table view / --json (CPU)", table_view.cpu / json_view.cpu, "<= 2"),
            ("peak memory of --json / log size", json_view.peak_mib / size, "(for information)"),
        ],
        note="Each in a fresh process, Python start-up included; CPU = user + system time (the machine "
        "is shared: waiting for a core does not count); peak = its maximum resident set. The log "
        "(schema 3, one line a job: `benchmarks/big.py`'s `write_log`) is streamed a line at a time; "
        "memory holds one row per job and one span per attempt (export: each job's text too). "
        "The floors (`_LEAST_SUMMARY`, `_LEAST_EXPORT`) are the least a Python reader of this log "
        "can do: parse each line with orjson and fold the few fields a summary or a row needs, no "
        f"event objects, no checks. They and the baseline run {_FLOOR_RUNS} times, taking turns; "
        "ratios use their median CPU. `BENCH_BIGREPORT_JOBS` sets the size.",
    )


_PLAN = """\
import sys, time
from benchmarks.big import _status_kib, sim_batch
from orchestrator.record.resume import plan
spec = sim_batch(int(sys.argv[2]), None)
before = _status_kib("VmRSS")
start = time.perf_counter()
planned = plan(spec, sys.argv[1])
took = time.perf_counter() - start
grown = (_status_kib("VmHWM") - before) / 1024
assert planned.already_done == len(spec.jobs) and not planned.spec.jobs
print(f"{took} {grown}")
"""


def bench_big_resume(quick: bool) -> Section:
    jobs = 20_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "big.jsonl"
        write_log(log, jobs)
        size = log.stat().st_size / 2**20
        base = _child(_ORJSON_PASS, str(log))
        out = subprocess.run(
            [sys.executable, "-c", _PLAN, str(log), str(jobs)],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    took, grown = float(out[0]), float(out[1])
    return Section(
        "--resume on a big log",
        [
            Row(f"{jobs:,}-job log ({size:,.0f} MiB), nothing left to do: the resume plan", [took], "s"),
            Row("  memory it adds to the loaded batch (peak resident growth)", [grown], "MiB"),
            Row("baseline: one orjson.loads pass over the file", [base[0]], "s"),
        ],
        ratio=(took, "<= 20 s", None),
        ratio_label="resume plan, s",
        extra_ratios=[("resume plan memory, MiB", grown, "<= 300 MiB")],
        note="The plan streams the log against the batch's jobs (one byte per job). Not included: "
        "loading the job file (about 2 s for a million-line prompts file or JSONL data file: see "
        '"Data files"), and the batch itself in memory.',
    )


# --- a big job file: time to the first request ----------------------------------------------


def _first_request(job_file: Path, log: Path, **env: str) -> tuple[float, float, int]:
    """Start ``orchestrate`` on ``job_file`` (``env``: more environment); (seconds to the first
    attempt_started in the log, seconds from a SIGINT then to the process's exit, its exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", str(job_file), "--log", str(log), "-q"],
        cwd=ROOT,
        env={**_env(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen, offset, tail = None, 0, b""
    while seen is None and proc.poll() is None:
        time.sleep(0.02)
        if log.exists():
            with open(log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            if b'"attempt_started"' in tail + chunk:
                seen = time.perf_counter() - start
            tail = chunk[-32:]
    asked = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=600)
    return seen if seen is not None else float("nan"), time.perf_counter() - asked, code


def bench_first_request(quick: bool) -> Section:
    jobs = 20_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        with open(prompts, "wb") as f:
            f.write(b"".join(orjson.dumps(f"question {i}: what comes next?") + b"\n" for i in range(jobs)))
        job_file = Path(tmp) / "big.toml"
        job_file.write_text(
            'prompts_file = "prompts.jsonl"\n[defaults]\nconcurrency = 1000\n'
            "[defaults.sim]\nttft = 0.5\ntokens_per_s = 0\nreply_tokens = 4\n"
        )
        # An HTTP backend's preflight checks the jobs' settings (model, options): once for
        # prompts that share them. Nothing listens on the port: the first attempt starts, then
        # fails to connect and waits to retry until the Ctrl-C.
        http_file = Path(tmp) / "big-openai.toml"
        http_file.write_text(
            'prompts_file = "prompts.jsonl"\n[defaults]\nconcurrency = 1000\nbackend = "openai"\n'
            'model = "gpt-4o-mini"\n[backends.openai]\nbase_url = "http://127.0.0.1:9/v1"\n'
        )
        base = _child(_ORJSON_PASS, str(prompts))
        first, stop, code = _first_request(job_file, Path(tmp) / "run.jsonl")
        http_first, _, _ = _first_request(http_file, Path(tmp) / "http.jsonl", OPENAI_API_KEY="sk-bench")
    return Section(
        "A big job file: time to the first request",
        [
            Row(f"{jobs:,}-line prompts file: start to the first attempt", [first], "s"),
            Row(f"then Ctrl-C: to the process's exit (exit code {code})", [stop], "s"),
            Row("the same prompts on the openai backend: start to the first attempt", [http_first], "s"),
            Row("baseline: one orjson.loads pass over the prompts file", [base[0]], "s"),
        ],
        ratio=(first, "<= 5 s", None),
        ratio_label=f"first request at {jobs:,} jobs, s",
        note="`orchestrate JOBFILE --log LOG -q` in a fresh process: Python start-up, imports, reading "
        "and checking the job file, the batch's set-up, up to the first `attempt_started` in the log. "
        "On `openai` the preflight checks the settings the prompts share once (it made every job "
        "before: 9.4 s more at 1,000,000 prompts).",
    )


BIG = {
    "bigstop": bench_stop,
    "bigreport": bench_big_report,
    "bigresume": bench_big_resume,
    "firstrequest": bench_first_request,
}

if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for name in [a for a in sys.argv[1:] if a in BIG] or list(BIG):
        print(BIG[name](quick).markdown())
