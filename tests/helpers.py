"""Shared test helpers: run a batch on trio's virtual clock and look at what came out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from orchestrator.config.jobfile import build_batch
from orchestrator.events import TERMINAL_EVENTS, JobsSkipped, Tagged
from orchestrator.record.coalesce import coalesce
from orchestrator.run.batch import BatchResult, execute
from orchestrator.run.bus import Subscriber
from orchestrator.run.control import RunControl
from orchestrator.spec import BatchSpec


class FakeBackendKind:
    """What a backend kind made for a test shares: no options or settings, no preflight
    problem, nothing to open. A subclass gives ``name`` and ``stream``."""

    Options = attrs.make_class("Options", {})
    Settings = attrs.make_class("Settings", {})
    default_concurrency: int | None = None

    def preflight(self, settings: Any, jobs: Any) -> list[str]:
        return []

    @asynccontextmanager
    async def open(self, settings: Any, *, seed: int) -> AsyncIterator[Any]:
        yield self


class Recorder:
    """A subscriber that keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[Tagged] = []

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        self.events.extend(batch)

    def of_job(self, job_id: str) -> list[Tagged]:
        return [t for t in self.events if t.job_id == job_id]

    def kinds(self, job_id: str) -> list[str]:
        return [t.event.kind for t in self.of_job(job_id)]


def job_ends(events: Sequence[Tagged], job_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each job's ends, in order: its own terminal events by kind, and ``jobs_skipped`` for each
    ``jobs_skipped`` event whose ranges cover its position in ``job_ids`` (the run's job order)."""
    ends: dict[str, list[str]] = {job: [] for job in job_ids}
    for tagged in events:
        event = tagged.event
        if isinstance(event, JobsSkipped):
            for start, end in event.ranges:
                for job in job_ids[start:end]:
                    ends[job].append(event.kind)
        elif tagged.job_id is not None and isinstance(event, TERMINAL_EVENTS):
            ends[tagged.job_id].append(event.kind)
    return ends


def as_logged(events: Sequence[Tagged]) -> dict[str | None, list[Tagged]]:
    """Each job's records (batch-level ones under None) with every run of deltas joined: equal
    for a log and the live events it recorded (the log writes runs of deltas as one line, and
    flushes a held run after other jobs' later events)."""
    per_job: dict[str | None, list[Tagged]] = {}
    for tagged in coalesce(events):
        per_job.setdefault(tagged.job_id, []).append(tagged)
    return per_job


def make_spec(queries: Sequence[Any], **defaults: Any) -> BatchSpec:
    defaults.setdefault("backend", "sim")
    return build_batch(queries, defaults)


def run_virtual(
    spec: BatchSpec,
    *,
    subscribers: Sequence[Subscriber] = (),
    control: RunControl | None = None,
    keep_text: bool = True,
) -> BatchResult:
    """Run a batch to the end on a virtual clock that jumps whenever every task is idle."""
    return trio.run(
        lambda: execute(spec, subscribers=subscribers, control=control, keep_text=keep_text),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll ``condition`` (a file's contents, another process's state) until it holds; fails
    after ``timeout`` seconds, a guard against a hang rather than a claim about speed."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)
