"""What one job costs: log bytes per job, CPU per job against a batched bare-trio program.

Each figure is a ratio against a baseline measured in the same run (the machine is shared).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Sequence
from typing import BinaryIO

import orjson
import trio

from benchmarks.fresh import in_fresh_process
from benchmarks.table import Row, Section
from orchestrator import codec
from orchestrator.config.jobfile import build_batch
from orchestrator.events import Tagged
from orchestrator.run.batch import execute
from orchestrator.run.garbage import fewer_full_collections

# --- log bytes per job ------------------------------------------------------------------------


class _OneLinePerEvent:
    """Counts the bytes the log held before issue 17.5: one line per event, every field written
    (log schema 1; ``ts`` already to the microsecond, as the bus tags it)."""

    def __init__(self) -> None:
        self.bytes = 0

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        full = codec.event_to_dict
        self.bytes += sum(
            len(
                orjson.dumps(
                    {"job": t.job_id, "attempt": t.attempt, "seq": t.seq, "ts": t.ts, **full(t.event)}
                )
            )
            + 1
            for t in batch
        )


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
            Row("baseline: one line per event, every field (log schema 1)", [per_event.bytes / jobs], "B"),
            Row("  the run's wall time", [wall], "s"),
        ],
        ratio=(ratio, ">= 5", None),
        ratio_label="one line per event / our log",
        note="The log writes a run of text deltas of one attempt as one record (`seq_end`, the first "
        "delta's `ts`), `ts` rounded to microseconds, leaves out fields at their defaults and what "
        "earlier records of the job say (`seq`, `attempt`, a `stream_finished`'s tokens and session), "
        "and (log schema 3) puts a job's records that follow one another on one line, holding them "
        "up to 2 s; the bus still carries every delta. The baseline counts the same live events "
        "encoded one line each with every field (schema 1), in the same run.",
    )


# --- CPU per job against a batched bare-trio program --------------------------------------------


async def _bare_batched(jobs: int, concurrency: int, f: BinaryIO) -> None:
    """What trio allows for the same work: a pool of workers, 7 small events per job tagged with
    job id, attempt, seq and ts, sent as one list per job (one channel send), and a consumer
    writing one JSON line per event with one file write per batch of lists."""
    import orjson

    send, receive = trio.open_memory_channel[list[tuple[str, int, int, float, dict[str, object]]]](1024)
    queue = iter(range(jobs))
    now = trio.current_time
    t0 = now()

    async def worker() -> None:
        for i in queue:
            job = f"q{i}"
            events = [
                (
                    job,
                    0,
                    0,
                    now() - t0,
                    {"kind": "job_queued", "backend": "sim", "model": None, "content_hash": "h"},
                ),
                (job, 1, 1, now() - t0, {"kind": "attempt_started", "backend": "sim"}),
                (
                    job,
                    1,
                    2,
                    now() - t0,
                    {"kind": "session_started", "session_id": job, "model": "sim", "tools": []},
                ),
                (job, 1, 3, now() - t0, {"kind": "text_delta", "text": "word"}),
                (job, 1, 4, now() - t0, {"kind": "usage", "tokens": {"input": 1, "output": 1}}),
                (job, 1, 5, now() - t0, {"kind": "stream_finished", "stop_reason": "end_turn"}),
                (job, 1, 6, now() - t0, {"kind": "job_succeeded", "attempts": 1}),
            ]
            await send.send(events)
            await trio.lowlevel.checkpoint()  # a job's latency: the worker yields once

    async def writer() -> None:
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        async for first in receive:
            lists = [first]
            while True:
                try:
                    lists.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            f.write(
                b"".join(
                    dumps({"job": j, "attempt": a, "seq": s, "ts": ts, **e}, option=newline)
                    for events in lists
                    for j, a, s, ts, e in events
                )
            )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        async with send:
            async with trio.open_nursery() as workers:
                for _ in range(concurrency):
                    workers.start_soon(worker)


def _cpu_ours(jobs: int, concurrency: int) -> float:
    """CPU µs per job of a sim batch of ``jobs`` (7 events each, log on disk)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = build_batch(
            [f"q{i}" for i in range(jobs)],
            {
                "backend": "sim",
                "concurrency": concurrency,
                "log": os.path.join(tmp, "ours.jsonl"),
                "log_inputs": False,  # the 7 events of the bare program (no job_input)
                "sim": {"ttft": 0, "tokens_per_s": 0, "reply_tokens": 1},
            },
        )
        gc.collect()
        start = time.process_time()
        result = trio.run(lambda: execute(spec, keep_text=False))
        spent = time.process_time() - start
        assert result.summary.succeeded == jobs
    return spent / jobs * 1e6


def _cpu_bare(jobs: int, concurrency: int) -> float:
    """CPU µs per job of the batched bare-trio program, with the collector settings ours has
    (see orchestrator.run.garbage)."""
    with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "bare.jsonl"), "wb") as f:
        gc.collect()
        with fewer_full_collections():
            start = time.process_time()
            trio.run(_bare_batched, jobs, concurrency, f)
            spent = time.process_time() - start
    return spent / jobs * 1e6


def bench_cpu_per_job(quick: bool) -> Section:
    jobs, concurrency = (5_000, 1_000) if quick else (100_000, 1_000)
    repeats = 1 if quick else 3
    ours_us: list[float] = []
    bare_us: list[float] = []
    for _ in range(repeats):  # in turn, each in a fresh process
        ours_us.append(in_fresh_process(_cpu_ours, jobs, concurrency))
        bare_us.append(in_fresh_process(_cpu_bare, jobs, concurrency))
    ratios = sorted(o / b for o, b in zip(ours_us, bare_us, strict=True))
    return Section(
        "CPU per job",
        [
            Row(f"{jobs:,} sim jobs, no latency, concurrency {concurrency:,}, log on disk", ours_us, "µs"),
            Row("baseline: bare trio, same workers and 7 events, batched sends and writes", bare_us, "µs"),
        ],
        ratio=(ratios[len(ratios) // 2], "<= 2", None),
        ratio_label="ours / bare trio (median of per-run ratios)",
        note="CPU time (process_time) per job, the two programs in turn, each run in a fresh process "
        "(imports and start-up not counted) and with the garbage collector's thresholds a batch "
        "sets. A sim job is 7 events "
        "(job_queued, attempt_started, session_started, text_delta, usage, stream_finished, "
        "job_succeeded) through the bus, the aggregation and the log; the bare program tags the "
        "same 7 events as tuples, sends one list per job and writes one JSON line per event.",
    )


# --- group commit -------------------------------------------------------------------------------


def bench_group_commit(quick: bool) -> Section:
    """Client CPU per short paced request: every batch holding a terminal event fsynced at once
    (as before group commit) against fsyncs at least 10 ms apart, in the same process."""
    from orchestrator.record import log

    jobs, rpm = (200, 60_000) if quick else (2_000, 30_000)
    repeats = 1 if quick else 5
    interval, real_fsync = log.COMMIT_INTERVAL, os.fsync
    fsyncs = [0]

    def counted_fsync(fd: int) -> None:
        fsyncs[0] += 1
        real_fsync(fd)

    def measure(variant: str, tmp: str) -> tuple[float, float]:
        spec = build_batch(
            [f"q{i}" for i in range(jobs)],
            {
                "backend": "sim",
                "concurrency": 64,
                "fsync": "never" if variant == "never" else "terminal",
                "log": os.path.join(tmp, f"{variant}.jsonl"),
                "sim": {"ttft": 0.05, "tokens_per_s": 0, "reply_tokens": 20},
                "backends": {"sim": {"rpm": rpm, "burst": "none"}},
            },
        )
        log.COMMIT_INTERVAL = 0.0 if variant == "per batch" else interval
        os.fsync = counted_fsync
        fsyncs[0] = 0
        try:
            start = time.process_time()
            result = trio.run(lambda: execute(spec, keep_text=False))
            cpu = (time.process_time() - start) / jobs * 1e6
        finally:
            log.COMMIT_INTERVAL, os.fsync = interval, real_fsync
        assert result.summary.succeeded == jobs
        return cpu, fsyncs[0] / jobs

    variants = ["group commit", "per batch", "never"]
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    per_job: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:  # a real disk, not a tmpfs
        for _ in range(repeats):
            for variant in variants:
                c, f = measure(variant, tmp)
                cpu[variant].append(c)
                per_job[variant].append(f)
    med = {v: sorted(c)[len(c) // 2] for v, c in cpu.items()}
    saved = (med["per batch"] - med["group commit"]) / max(med["per batch"] - med["never"], 1e-9)
    return Section(
        "Group commit",
        [
            Row(
                f"{jobs:,} paced sim requests ({rpm / 60:,.0f}/s), fsync = terminal, group commit",
                cpu["group commit"],
                "µs",
            ),
            Row("  fsyncs per job", per_job["group commit"], ""),
            Row(
                "baseline: an fsync for each batch holding a terminal event, at once (before)",
                cpu["per batch"],
                "µs",
            ),
            Row("  fsyncs per job", per_job["per batch"], ""),
            Row("reference: fsync = never", cpu["never"], "µs"),
        ],
        ratio=(med["group commit"] / med["per batch"], "(for information)", None),
        ratio_label="CPU per request, group commit / per batch",
        extra_ratios=[("share of the fsync cost saved", saved, "(for information)")],
        note="Client CPU (process_time) per request, the variants taking turns in one process; the log on "
        "the working directory's disk. Short replies (20 tokens after 50 ms), paced evenly by `rpm` "
        'with `burst = "none"`, concurrency 64: terminal events arrive one by one, as in a paced API run.',
    )
