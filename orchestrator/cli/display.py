"""What a person sees: live progress (rich on a terminal, plain lines otherwise) and the summary.

:class:`Progress` is a bus subscriber that only counts; drawing happens in :func:`run_progress`
a few times a second, so the display never slows the batch.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO

import attrs
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.events import (
    AttemptStarted,
    BatchProgress,
    BatchStarted,
    BatchStopped,
    BatchSubmitted,
    BatchSummary,
    JobCancelled,
    JobFailed,
    JobSkipped,
    JobsSkipped,
    JobSucceeded,
    LimiterChanged,
    RetryScheduled,
    StreamFinished,
    SystemNotice,
    Tagged,
    TextDelta,
    UsageReported,
)
from orchestrator.record.cost import AttemptMeter
from orchestrator.record.job_result import JobResult
from orchestrator.visible import as_text, visible

_TAIL = 70


@attrs.define(slots=True)
class RunningAttempt:
    """A running attempt as the live panel shows it."""

    attempt: int
    deltas: int = 0  # text deltas seen
    tail: str = ""  # the end of its text
    unreported: int = 0  # deltas not yet counted by a usage report (they stand in for tokens)
    meter: AttemptMeter = attrs.Factory(AttemptMeter)


class Progress:
    """Counts what the batch is doing, from its events.

    Tokens and cost of an attempt are settled when it ends, by the rule the summary uses
    (:func:`~orchestrator.record.cost.attempt_cost`), so the panel's final cost is the summary's.
    """

    def __init__(self) -> None:
        self.total = 0
        self.succeeded = 0
        self.failed = 0
        self.other = 0  # cancelled or skipped
        self.retrying: set[str] = set()
        self.running: dict[str, RunningAttempt] = {}
        self.output_tokens = 0  # of ended attempts
        self.cost = 0.0  # known cost of ended attempts
        self.cost_unknown: set[str] = set()  # jobs with an attempt of unknown cost
        self.notices = 0
        self.failures: list[str] = []
        self.last_ts = 0.0
        self.limits: dict[str, str] = {}  # backend -> its latest limiter change, in words
        self.in_flight_limits: list[tuple[str, float]] = []  # (backend, limit): concurrency changes
        # Remote batches of the batch backends: id -> (when it was submitted, its latest counts).
        self.remote: dict[str, tuple[float, Mapping[str, int]]] = {}

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.other

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        for tagged in batch:
            self.last_ts = tagged.ts
            event, job = tagged.event, tagged.job_id
            row = self.running.get(job) if job is not None else None
            match event:
                case TextDelta(text=text):
                    if row is not None:
                        row.meter.streamed = True
                        row.deltas += 1
                        row.unreported += 1
                        row.tail = (row.tail + text)[-_TAIL:]
                case StreamFinished():
                    if row is not None:
                        row.meter.finish(event)
                        if event.tokens is not None:  # the stream's own total counts every delta
                            row.unreported = 0
                case UsageReported():
                    if row is not None:
                        row.meter.add_usage(event)
                        row.unreported = 0
                case AttemptStarted():
                    assert job is not None
                    self._settle(job)
                    self.retrying.discard(job)
                    self.running[job] = RunningAttempt(tagged.attempt)
                case RetryScheduled():
                    assert job is not None
                    self._settle(job)
                    self.retrying.add(job)
                case BatchStarted(jobs=jobs):
                    self.total = jobs  # known at once, before every job is announced
                case JobSucceeded():
                    self.succeeded += 1
                    self._end(job)
                case JobFailed(error_kind=kind, message=message):
                    self.failed += 1
                    self.failures.append(f"{job}: {kind}: {message}")
                    self._end(job)
                case JobCancelled() | JobSkipped():
                    self.other += 1
                    self._end(job)
                case JobsSkipped(count=count):
                    self.other += count
                case SystemNotice(subtype=subtype):
                    self.notices += 1
                    if row is not None and subtype in ("api_retry", "model_fallback", "status"):
                        row.tail = f"[{subtype}] {row.tail}"[-_TAIL:]
                case LimiterChanged(backend=backend, change=change, value=value, until_s=until):
                    self.limits[backend] = _describe_limit(change, value, until)
                    if change == "concurrency" and value is not None:
                        self.in_flight_limits.append((backend, value))
                case BatchSubmitted(remote_id=remote_id):
                    self.remote[remote_id] = (tagged.ts, {})
                case BatchProgress(remote_id=remote_id, counts=counts):
                    submitted = self.remote.get(remote_id, (tagged.ts, {}))[0]
                    self.remote[remote_id] = (submitted, counts)
                case BatchStopped(remote_id=remote_id):
                    self.remote.pop(remote_id, None)
                case _:
                    pass

    def held_back(self, concurrency: int) -> dict[str, int]:
        """See :func:`held_back`."""
        return held_back(self.in_flight_limits, concurrency)

    def _settle(self, job: str) -> None:
        """End the job's running attempt, if any: add what it used (the summary's rule)."""
        row = self.running.pop(job, None)
        if row is None:
            return
        spent = row.meter.cost()
        self.output_tokens += spent.tokens.output
        if spent.cost_usd is None:
            self.cost_unknown.add(job)
        else:
            self.cost += spent.cost_usd

    def _end(self, job: str | None) -> None:
        if job is not None:
            self._settle(job)
            self.retrying.discard(job)

    def status_line(self, elapsed: float) -> str:
        # Streaming deltas stand in for tokens until the attempt reports its real usage.
        streamed = self.output_tokens + sum(
            row.meter.cost().tokens.output + row.unreported for row in self.running.values()
        )
        rate = streamed / elapsed if elapsed > 0 else 0.0
        eta = ""
        if 0 < self.done < self.total and elapsed > 0:
            eta = f"  eta {_duration((self.total - self.done) * elapsed / self.done)}"
        limits = "".join(f"  [{visible(name)}: {text}]" for name, text in self.limits.items())
        unknown = f" (+{len(self.cost_unknown)} unknown)" if self.cost_unknown else ""
        return (
            f"{self.done}/{self.total} done  {len(self.running)} running  {len(self.retrying)} retrying  "
            f"{self.failed} failed  {rate:,.0f} tok/s  ${self.cost:.4f}{unknown}  "
            f"{_duration(elapsed)}{eta}{limits}{self._remote_line(elapsed)}"
        )

    def remote_running(self) -> int:
        """How many remote batches have requests still processing (as their last poll said;
        one not polled yet counts)."""
        return sum(1 for _, counts in self.remote.values() if counts.get("processing", 1) > 0)

    def _remote_line(self, elapsed: float) -> str:
        """The remote batches in a few words: how many, their requests by state (the provider's
        words, summed over batches), and the time since the first was submitted."""
        if not self.remote:
            return ""
        counts: dict[str, int] = {}
        for _, latest in self.remote.values():
            for state, n in latest.items():
                counts[state] = counts.get(state, 0) + n
        states = ", ".join(f"{visible(state)} {n}" for state, n in sorted(counts.items()) if n)
        first = min(submitted for submitted, _ in self.remote.values())
        batches = f"{len(self.remote)} remote batch{'es' if len(self.remote) > 1 else ''}"
        return f"  [{batches}{': ' + states if states else ''}; first sent {_duration(elapsed - first)} ago]"

    def renderable(self, elapsed: float, rows: int = 8) -> Group:
        table = Table(show_header=False, box=None, pad_edge=False, expand=False)
        table.add_column(style="cyan", no_wrap=True, max_width=24)
        table.add_column(style="dim", no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        for job, row in list(self.running.items())[:rows]:
            label = f"#{row.attempt} {row.deltas} tok" if row.attempt > 1 else f"{row.deltas} tok"
            table.add_row(as_text(job), label, as_text(row.tail.replace("\n", " ")))
        if len(self.running) > rows:
            table.add_row("…", f"+{len(self.running) - rows} more", "")
        return Group(Text(self.status_line(elapsed), style="bold"), table)


async def run_progress(
    progress: Progress, *, tty: bool, stream: IO[str] = sys.stderr, interval: float = 2.0
) -> None:
    """Draw ``progress`` until cancelled: a live panel on a terminal, else a line when it changes
    (at most every ``interval`` seconds) plus a line per failed job. Holds no resources beyond the
    terminal; cancellation leaves the last frame on screen."""
    start = trio.current_time()
    if tty:
        console = Console(file=stream)
        with Live(console=console, auto_refresh=False, transient=True) as live:
            while True:
                live.update(progress.renderable(trio.current_time() - start), refresh=True)
                await trio.sleep(0.2)
    shown_failures = 0
    last = ""
    while True:
        await trio.sleep(interval)
        for line in progress.failures[shown_failures:]:
            print(f"failed {visible(line)}", file=stream, flush=True)
        shown_failures = len(progress.failures)
        line = progress.status_line(trio.current_time() - start)
        if line.split("  ")[0:4] != last.split("  ")[0:4]:
            print(line, file=stream, flush=True)
            last = line


def held_back(limits: Iterable[tuple[str, float]], concurrency: int) -> dict[str, int]:
    """The backends whose in-flight limit stayed below the batch's ``concurrency`` all run, from
    their ``concurrency`` limiter changes (backend, value): backend -> the most attempts it ever
    allowed at once. ``"*"`` (the whole batch) is not a backend."""
    most: dict[str, float] = {}
    for backend, value in limits:
        if backend != "*":
            most[backend] = max(most.get(backend, 0.0), value)
    return {name: int(value) for name, value in most.items() if value < concurrency}


def _describe_limit(change: str, value: float | None, until: float | None) -> str:
    if change in ("paused", "pacing") and until is not None:
        return f"{change} until {until:.1f}s"
    if change == "spend_cap":
        return "spend cap reached"
    if change == "halted":
        return "halted: its jobs keep failing"
    return f"{change} {value:g}" if value is not None else change


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _clip(text: str, lines: int = 6, chars: int = 400) -> str:
    text = text.strip()
    kept = text.splitlines()[:lines]
    clipped = "\n".join(kept)[:chars]
    return clipped + (" …" if len(clipped) < len(text) else "")


def _opt(value: float | None, fmt: str = "{:.2f}s") -> str:
    return "-" if value is None else fmt.format(value)


def print_summary(
    summary: BatchSummary,
    jobs: Iterable[JobResult],
    *,
    stream: IO[str],
    log: str | None,
    max_rows: int = 20,
    held_back: Mapping[str, int] | None = None,
    concurrency: int | None = None,
) -> None:
    """The end-of-run summary: the answers (when the results kept them), the totals, the
    backends whose own in-flight limit held the batch below its ``concurrency`` (``held_back``),
    and the jobs that did not succeed."""
    console = Console(file=stream, soft_wrap=True)
    # Only a small batch keeps its answers; a big one's results are not all walked (a stopped
    # batch of a million jobs makes its skipped jobs' results only when asked for).
    small = summary.jobs <= max_rows
    answers = [job for job in jobs if job.ok and job.text is not None] if small else []
    if answers:
        table = Table(title="answers", title_justify="left", show_lines=True)
        table.add_column("job", style="cyan", no_wrap=True)
        table.add_column("answer", overflow="fold")
        for job in answers:
            table.add_row(as_text(job.job_id), as_text(_clip(job.text or ""), lines=True))
        console.print(table)
    status = (
        "stopped: " + summary.stopped
        if summary.stopped
        else ("all succeeded" if summary.ok else "some failed")
    )
    if summary.simulated:
        status += " — simulated"
    table = Table(title=as_text(f"batch summary — {status}"), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    counts = f"{summary.succeeded} succeeded, {summary.failed} failed"
    if summary.cancelled or summary.skipped:
        counts += f", {summary.cancelled} cancelled, {summary.skipped} skipped"
    table.add_row("jobs", f"{summary.jobs} ({counts})")
    if summary.already_done:
        table.add_row("resumed", f"{summary.already_done} jobs already done in the log, not run again")
    table.add_row("attempts", f"{summary.attempts} ({summary.retries} retries)")
    if summary.deduplicated:
        table.add_row(
            "deduplicated",
            f"{summary.deduplicated} jobs took the answer of an identical request sent once (cost 0)",
        )
    if summary.stream_warnings:
        table.add_row("warnings", f"{summary.stream_warnings} stream warnings (in the log: stream_warning)")
    tokens = summary.tokens
    cache = (
        f", cache read {tokens.cache_read:,} / write {tokens.cache_creation:,}"
        if tokens.cache_read or tokens.cache_creation
        else ""
    )
    table.add_row("tokens", f"{tokens.input:,} in, {tokens.output:,} out{cache}")
    cost = f"${summary.cost_usd:.4f}"
    if summary.cost_unknown_jobs:
        cost += f" (+ unknown for {summary.cost_unknown_jobs} jobs)"
    table.add_row("cost", cost)
    if summary.priced_by:
        sources = "; ".join(f"{model}: {source}" for model, source in summary.priced_by.items())
        table.add_row("prices", sources)
    if summary.simulated:
        table.add_row(
            "simulated",
            f"{summary.simulated_jobs} of {summary.jobs} jobs ran on the simulator (sim): "
            "their text, tokens and cost are made up",
        )
    table.add_row(
        "wall time",
        f"{summary.wall_s:.2f}s ({summary.jobs_per_s:.2f} jobs/s, {summary.tokens_per_s:,.0f} tok/s)",
    )
    table.add_row(
        "latency",
        f"p50 {_opt(summary.latency_p50_s)}  p95 {_opt(summary.latency_p95_s)}"
        f"  max {_opt(summary.latency_max_s)}  ttft p50 {_opt(summary.ttft_p50_s)}",
    )
    for backend, most in (held_back or {}).items():
        table.add_row(
            "in flight",
            as_text(
                f"{backend} ran at most {most} attempts at once, fewer than the batch's concurrency "
                f"{concurrency} ([backends.{backend}] concurrency sets it)"
            ),
        )
    if summary.failures:
        table.add_row("failures", as_text(", ".join(f"{k} x{v}" for k, v in summary.failures.items())))
    if log:
        table.add_row("log", as_text(log))
    console.print(table)
    unhappy = list(itertools.islice((j for j in jobs if not j.ok), max_rows))
    if unhappy:
        failed = Table(title="jobs that did not succeed", title_justify="left")
        for column in ("job", "status", "attempts", "error"):
            failed.add_column(column)
        for job in unhappy:
            failed.add_row(
                as_text(job.job_id), job.status, str(job.attempts), as_text(f"{job.error_kind}: {job.error}")
            )
        more = summary.failed + summary.cancelled + summary.skipped - len(unhappy)
        if more > 0:
            failed.add_row("…", f"{more} more", "", "")
        console.print(failed)
