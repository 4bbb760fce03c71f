"""Data files at scale: rows read and rendered into jobs, start-up to the first request, peak RSS.

    python -m benchmarks.datasets --rows 100000 1000000 [--run-up-to 100000]

For each size it writes a JSONL and a CSV file of short reviews, then measures, each in a fresh
process (so peak RSS is that step's own):

* baseline: a plain ``orjson`` pass over the JSONL lines, and a plain ``csv.reader`` pass;
* load: the job file resolved into a :class:`~orchestrator.spec.BatchSpec` (every row read
  and checked; plain rows kept compact, their jobs not made yet) — rows/s and peak RSS;
* render: load, then every job made from its row (templates rendered, content hashed), as a
  run makes them — rows/s and peak RSS;
* start: loading, then the batch on ``sim`` with a log until its first ``attempt_started``
  (then stopped): the seconds to that first request;
* run (sizes up to ``--run-up-to``): the whole batch on ``sim`` with a log, the seconds from
  the start of loading to the first ``attempt_started``, and peak RSS.

Prints a Markdown table to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = (
    "Arrived quickly and works exactly as described. Very happy with it.",
    "Broke after two days. Waste of money, would not recommend.",
    "It's okay. Does the job, nothing special about it at all.",
)


def write_files(directory: Path, rows: int) -> tuple[Path, Path]:
    jsonl, csv_path = directory / f"rows-{rows}.jsonl", directory / f"rows-{rows}.csv"
    with open(jsonl, "w") as j, open(csv_path, "w") as c:
        c.write("review_id,text,label\n")
        for i in range(rows):
            text = f"{TEXTS[i % 3]} (#{i})"
            j.write(json.dumps({"review_id": f"r{i}", "text": text, "label": i % 3}) + "\n")
            c.write(f'r{i},"{text}",{i % 3}\n')
    for path in (jsonl, csv_path):
        job_file(path).write_text(
            f'data_file = "{path.name}"\n[defaults]\nbackend = "sim"\nid_column = "review_id"\n'
            'prompt_template = "Classify: {text}"\ncolumns = ["review_id", "label"]\n'
            "concurrency = 1000\n[defaults.sim]\nttft = 0\ntokens_per_s = 0\nreply_tokens = 2\n"
        )
    return jsonl, csv_path


def job_file(data: Path) -> Path:
    """The job file written for a data file: ``rows-N.jsonl.toml`` (one per format)."""
    return data.with_name(data.name + ".toml")


_STEPS = {
    "orjson": """
import orjson
n = 0
with open(PATH, "rb") as f:
    for line in f:
        orjson.loads(line); n += 1
""",
    "csv": """
import csv
n = 0
with open(PATH, newline="") as f:
    for row in csv.reader(f):
        n += 1
""",
    "load": """
from orchestrator.config.jobfile import load_job_file
spec = load_job_file(PATH)
n = len(spec.jobs)
""",
    "run": """
import time, attrs, trio
from orchestrator.config.jobfile import load_job_file
from orchestrator.run.batch import execute
class First:
    at = cpu = None
    async def deliver(self, batch):
        if First.at is None and any(t.event.kind == "attempt_started" for t in batch):
            First.at = time.perf_counter()
            First.cpu = time.process_time()
spec = attrs.evolve(load_job_file(PATH), log=PATH + ".log.jsonl")
result = trio.run(lambda: execute(spec, subscribers=[First()], keep_text=False))
n = result.summary.succeeded
FIRST = First.at - T0
FIRST_CPU = First.cpu
""",
    "render": """
from orchestrator.config.jobfile import load_job_file
spec = load_job_file(PATH)
n = sum(1 for job in spec.jobs)
""",
    "start": """
import time, attrs, trio
from orchestrator.config.jobfile import load_job_file
from orchestrator.run.batch import execute
from orchestrator.run.control import RunControl
control = RunControl()
class First:
    at = cpu = None
    async def deliver(self, batch):
        if First.at is None and any(t.event.kind == "attempt_started" for t in batch):
            First.at = time.perf_counter()
            First.cpu = time.process_time()
            control.cancel("measured")
spec = attrs.evolve(load_job_file(PATH), log=PATH + ".start.log.jsonl")
result = trio.run(lambda: execute(spec, subscribers=[First()], keep_text=False, control=control))
n = len(spec.jobs)
FIRST = First.at - T0
FIRST_CPU = First.cpu
""",
}


def measure(step: str, path: Path) -> dict[str, float]:
    """Run one step in a fresh interpreter; its seconds, peak RSS (MiB) and row count."""
    for log in path.parent.glob(path.name + ".*log.jsonl"):
        log.unlink()  # each run starts a fresh log
    code = (
        "import resource, time, json\nT0 = time.perf_counter()\nFIRST = FIRST_CPU = None\n"
        f"PATH = {str(path)!r}\n{_STEPS[step]}\n"
        "print(json.dumps({'s': time.perf_counter() - T0, 'cpu': time.process_time(), 'first': FIRST,"
        " 'first_cpu': FIRST_CPU, 'n': n,"
        " 'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--run-up-to", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="write the files here (kept), not in a temporary folder")
    args = parser.parse_args()
    print("| rows | file | step | seconds | CPU s | rows/s | peak RSS MiB | first request s (CPU s) |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            jsonl, csv_path = write_files(args.keep or Path(tmp), rows)
            plan = [
                ("orjson", "jsonl", jsonl),
                ("csv", "csv", csv_path),
                ("load", "jsonl", job_file(jsonl)),
                ("load", "csv", job_file(csv_path)),
                ("render", "jsonl", job_file(jsonl)),
                ("render", "csv", job_file(csv_path)),
            ]
            plan.append(("start", "jsonl", job_file(jsonl)))
            plan.append(("start", "csv", job_file(csv_path)))
            if rows <= args.run_up_to:
                plan.append(("run", "jsonl", job_file(jsonl)))
            for step, kind, path in plan:
                r = measure(step, path)
                first = f"{r['first']:.2f} ({r['first_cpu']:.2f})" if r["first"] is not None else ""
                print(
                    f"| {rows:,} | {kind} | {step} | {r['s']:.2f} | {r['cpu']:.2f} | {r['n'] / r['s']:,.0f} "
                    f"| {r['rss']:,.0f} | {first} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
