"""Resuming a batch from its log: which jobs are already done, and what is left to run.

A job counts as done when its last terminal event in the log is ``job_succeeded`` *and* the
content hash it was queued with equals the hash of the job as it is now, so an edited prompt,
model or option runs again. Everything else runs again (or, with ``retry_failed``, only the
jobs whose last outcome was ``job_failed``). The log is the source of truth; nothing else is
kept between runs.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import attrs

from orchestrator.errors import ConfigError
from orchestrator.events import TERMINAL_EVENTS
from orchestrator.record.log import HEADER_KIND, LogError, read_objects
from orchestrator.spec import BatchSpec

_TERMINAL_KINDS = frozenset(cls.kind for cls in TERMINAL_EVENTS)


@attrs.frozen
class LoggedJob:
    """What the log says about one job: its latest content hash and how it last ended."""

    content_hash: str | None
    outcome: str | None  # the kind of its last terminal event, or None if it has none


def scan(path: str | Path) -> dict[str, LoggedJob]:
    """Every job in the log with its latest hash and outcome.

    The log is read by the same rules as every reader (:func:`~.log.read_objects`): a file that
    is not a log, or a bad line other than a torn last one, raises ConfigError naming it.
    """
    hashes: dict[str, str | None] = {}
    outcomes: dict[str, str] = {}
    try:
        for _, obj in read_objects(path):
            kind, job = obj.get("kind"), obj.get("job")
            if not isinstance(job, str) or kind == HEADER_KIND:
                continue
            if kind == "job_queued":
                hashes[job] = obj.get("content_hash")
                outcomes.pop(job, None)  # queued again in a later run: its old outcome is history
            elif kind in _TERMINAL_KINDS:
                outcomes[job] = kind
    except LogError as exc:
        raise ConfigError([str(exc)]) from None
    return {job: LoggedJob(h, outcomes.get(job)) for job, h in hashes.items()}


@attrs.frozen
class ResumePlan:
    spec: BatchSpec
    already_done: int


def plan(spec: BatchSpec, log: str, *, retry_failed: bool = False) -> ResumePlan:
    """The batch minus what the log shows done; the new run appends to ``log``."""
    if not os.path.isfile(log):
        raise ConfigError([f"{log}: no such log to resume"])
    logged = scan(log)
    todo = []
    done = 0
    for job in spec.jobs:
        seen = logged.get(job.id)
        succeeded = (
            seen is not None and seen.outcome == "job_succeeded" and seen.content_hash == job.content_hash
        )
        if retry_failed:
            rerun = seen is not None and seen.outcome == "job_failed"
        else:
            rerun = not succeeded
        if rerun:
            todo.append(job)
        elif succeeded:
            done += 1
    return ResumePlan(attrs.evolve(spec, jobs=tuple(todo), log=log), done)


def latest_log(job_file: str, configured: str | None) -> str | None:
    """The log a ``--resume`` without a path means: the job file's configured log, or else the
    newest ``runs/<job file stem>-*.jsonl``."""
    if configured is not None and configured != "-":
        return configured
    stem = Path(job_file).stem
    # Only this job file's own logs: runs/big-test-*.jsonl is not a log of big.toml.
    own = re.compile(re.escape(stem) + r"-\d{8}-\d{6}\.jsonl")
    candidates = sorted(
        p for p in glob.glob(str(Path("runs") / f"{stem}-*.jsonl")) if own.fullmatch(Path(p).name)
    )
    return candidates[-1] if candidates else None
