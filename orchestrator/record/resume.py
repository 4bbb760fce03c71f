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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson

from orchestrator.errors import ConfigError
from orchestrator.events import TERMINAL_EVENTS
from orchestrator.record.lines import THEN, records_of
from orchestrator.record.log import HEADER_KIND, LogError, first_header
from orchestrator.spec import BatchSpec

_TERMINAL_KINDS = frozenset(cls.kind for cls in TERMINAL_EVENTS)


@attrs.frozen
class ResumePlan:
    spec: BatchSpec
    already_done: int


def plan(spec: BatchSpec, log: str, *, retry_failed: bool = False) -> ResumePlan:
    """The batch minus what the log shows done; the new run appends to ``log``.

    The log is streamed against the batch's jobs: memory holds a few bytes per job of the
    batch (and the hash each was last queued with), however long the log. What is left to run
    keeps the batch's jobs lazy (see :meth:`orchestrator.jobs.Jobs.pick`).
    """
    if not os.path.isfile(log):
        raise ConfigError([f"{log}: no such log to resume"])
    outcomes = last_outcomes(spec, log)
    todo = []
    done = 0
    for position, outcome in enumerate(outcomes):
        succeeded = outcome == SUCCEEDED
        rerun = outcome in (FAILED, FAILED | CHANGED) if retry_failed else not succeeded
        if rerun:
            todo.append(position)
        elif succeeded:
            done += 1
    jobs = spec.jobs if len(todo) == len(spec.jobs) else spec.jobs.pick(todo)
    return ResumePlan(attrs.evolve(spec, jobs=jobs, log=log), done)


# What the log says of a job, one byte per job: how its latest run ended, plus CHANGED when it
# was queued there with another content hash (an edited prompt or setting).
NOT_QUEUED, QUEUED, SUCCEEDED, FAILED, ENDED_OTHERWISE, CHANGED = 0, 1, 2, 3, 4, 8
_ENDS = {"job_succeeded": SUCCEEDED, "job_failed": FAILED}


def last_outcomes(spec: BatchSpec, log: str | Path) -> bytearray:
    """For each job of ``spec`` (in order), its latest outcome in the log (the codes above).

    Only ``job_queued`` and terminal lines are decoded; a job counts as done only when its
    latest ``job_queued`` carried the job's current content hash and its last terminal event
    since is ``job_succeeded``. A torn last line is ignored; any other line that is not JSON is
    an error.
    """
    positions = {job_id: i for i, job_id in enumerate(spec.jobs.ids())}
    outcomes = bytearray(len(spec.jobs))
    # The content hash each job was last queued with, compared once the log is read: in job
    # order, so jobs made from compact rows are resolved a chunk at a time (see orchestrator.jobs).
    queued_with: list[object] = [None] * len(outcomes)
    try:
        first_header(log)  # the rule every reader shares: a file that is not a log is refused
    except LogError as exc:
        raise ConfigError([str(exc)]) from None
    for number, obj in _job_lines(log):
        if not isinstance(obj, dict):
            what = "invalid JSON" if obj is None else f"expected a JSON object, got {type(obj).__name__}"
            raise ConfigError([f"{log}: line {number}: {what}"])
        job = obj.get("job")
        i = positions.get(job) if isinstance(job, str) else None
        if i is None or obj.get("kind") == HEADER_KIND:
            continue
        for kind, fields in records_of(obj):
            if kind == "job_queued":
                # Queued again in a later run: its old outcome is history.
                queued_with[i] = fields.get("content_hash")
                outcomes[i] = QUEUED
            elif kind in _TERMINAL_KINDS and outcomes[i] != NOT_QUEUED:
                outcomes[i] = _ENDS.get(kind, ENDED_OTHERWISE)
    del positions
    jobs = spec.jobs
    queued = len(outcomes) - outcomes.count(NOT_QUEUED)
    if queued * 8 < len(outcomes):  # a few: make only their jobs
        for i, outcome in enumerate(outcomes):
            if outcome != NOT_QUEUED and queued_with[i] != jobs[i].content_hash:
                outcomes[i] |= CHANGED
    else:  # most: one pass of hashes, each made from its row where it can be
        for i, digest in enumerate(jobs.content_hashes()):
            if outcomes[i] != NOT_QUEUED and queued_with[i] != digest:
                outcomes[i] |= CHANGED
    return outcomes


# Every kind the plan reads starts with "job_ (job_queued and the per-job terminal kinds): one
# substring test per line rules out the stream events, which are most of a log.
_WANTED = b'"job_'
assert all(kind.startswith("job_") for kind in (*_TERMINAL_KINDS, "job_queued"))
# ... except a line of a job_input alone, as logs before schema 3 write it: the longest line of
# a job (its rendered request), and one whose text may hold that substring.
_INPUT = b'"kind":"job_input"'
_THEN = b'"%s":' % THEN.encode()  # a line holding more than one record (schema 3)


def _job_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or None if not JSON) for every ``job_queued`` or terminal
    line, read one line at a time, and for any line that is not an object. Other lines (most
    are stream events) are skipped without parsing; so is a torn last line (no newline: a crash
    cut it)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            # A line of ours is an object: one that does not even start like one (hand-edited)
            # is parsed, so the caller can say what it is.
            skip = _WANTED not in raw or (_INPUT in raw and _THEN not in raw)
            if skip and (raw[:1] == b"{" or not raw.strip()):
                continue
            try:
                yield number, orjson.loads(raw)
            except orjson.JSONDecodeError:
                if not raw.endswith(b"\n"):
                    return
                yield number, None


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
