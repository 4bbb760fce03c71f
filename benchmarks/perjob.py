"""What one job costs: log bytes per job, CPU per job against a batched bare-trio program.

Each figure is a ratio against a baseline measured in the same run (the machine is shared).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence

import trio

from benchmarks.table import Row, Section
from orchestrator import codec
from orchestrator.config.jobfile import build_batch
from orchestrator.events import Tagged
from orchestrator.run.runner import execute

# --- log bytes per job ------------------------------------------------------------------------


class _OneLinePerEvent:
    """Counts the bytes the log would hold with one line per event (the same codec)."""

    def __init__(self) -> None:
        self.bytes = 0

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        encode = codec.encode_tagged
        self.bytes += sum(len(encode(t)) for t in batch)


def bench_log_size(quick: bool) -> Section:
    jobs, concurrency = (1_000, 100) if quick else (10_000, 1_000)
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "size.jsonl")
        # sim's default reply (24 tokens after 0.3 s, 40 tokens/s): paced like a real API stream
        spec = build_batch(
            [f"q{i}" for i in range(jobs)], {"backend": "sim", "concurrency": concurrency, "log": log}
        )
        per_event = _OneLinePerEvent()
        start = time.perf_counter()
        result = trio.run(lambda: execute(spec, keep_text=False, subscribers=[per_event]))
        wall = time.perf_counter() - start
        assert result.summary.succeeded == jobs
        written = os.path.getsize(log)
    ratio = per_event.bytes / written
    return Section(
        "Log bytes per job",
        [
            Row(
                f"{jobs:,} sim jobs, 24-token replies at 40 tokens/s: log bytes per job",
                [written / jobs],
                "B",
            ),
            Row("baseline: one line per event, same events and codec", [per_event.bytes / jobs], "B"),
            Row("  the run's wall time", [wall], "s"),
        ],
        ratio=(ratio, ">= 5", None),
        ratio_label="one line per event / our log",
        note="The log writes a run of text deltas of one attempt as one line (`seq`, `seq_end`, the "
        "first delta's `ts`) and `ts` rounded to microseconds; the bus still carries every delta. "
        "The baseline counts the same live events encoded one line each, in the same run.",
    )
