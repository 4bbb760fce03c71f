"""What a run's log says earlier runs left at a provider: the remote batches whose results no
run took, and the create calls sent without an answer logged (the run stopped during the call).

A ``batch_submitting`` (the intent, on disk before the create call goes) counts for its requests
as a ``batch_submitted`` does, until a ``batch_submitted`` names them: an intent that still holds
requests at the end of the log is a batch that may exist without its id in the log, which the
resumed run looks for at the provider before sending those requests again.

Also the one rule for a request's ``custom_id`` (:func:`custom_id`), by which the log's
requests are matched to jobs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

import attrs

from orchestrator.events import (
    BatchSubmitted,
    BatchSubmitting,
    JobFailed,
    JobQueued,
    JobSucceeded,
    RetryScheduled,
)
from orchestrator.record.lines import records_of
from orchestrator.record.log import read_objects

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def custom_id(job_id: str) -> str:
    """The batch request's id for ``job_id``: the id itself when the providers accept it
    (letters, digits, ``_``, ``-``, at most 64), else ``job-`` and a hash of it."""
    if _CUSTOM_ID.fullmatch(job_id):
        return job_id
    return "job-" + hashlib.sha256(job_id.encode()).hexdigest()[:48]


@attrs.frozen
class Intent:
    """A create call no answer of which is logged: its chunk's ``label``, ``at`` (wall-clock
    seconds before the call), ``count`` (requests in the chunk) and the requests whose result
    no run took (``custom_id``: the content hash its job was queued with, None if unknown)."""

    label: str
    at: float
    count: int
    requests: Mapping[str, str | None]


@attrs.frozen
class Left:
    """See the module docstring. ``known``: every remote batch of the backend the log names."""

    batches: Mapping[str, Mapping[str, str | None]]
    intents: tuple[Intent, ...]
    known: frozenset[str]


def left_in(log: str, backend: str) -> Left:
    """What ``log`` says runs left at ``backend``: each request counts in its latest batch (or
    intent) only, and not at all once followed by a retry or an end of its job. Intents come
    oldest first."""
    latest: dict[str, tuple[tuple[bool, str], str | None]] = {}  # cid: ((intent?, id), hash)
    queued: dict[str, str] = {}
    intents: dict[str, tuple[float, int]] = {}
    known: set[str] = set()
    for _, line in read_objects(log):
        job = line.get("job")
        for kind, record in records_of(line):
            ids = record.get("custom_ids")
            if kind in _SENT and record.get("backend") == backend and isinstance(ids, list):
                if kind == BatchSubmitted.kind and isinstance(remote := record.get("remote_id"), str):
                    where = (False, remote)
                    known.add(remote)
                elif kind == BatchSubmitting.kind and isinstance(label := record.get("label"), str):
                    at = record.get("at")
                    intents[label] = (float(at) if isinstance(at, int | float) else 0.0, len(ids))
                    where = (True, label)
                else:
                    continue
                latest.update({cid: (where, queued.get(cid)) for cid in ids if isinstance(cid, str)})
            elif (
                kind == JobQueued.kind
                and isinstance(job, str)
                and isinstance(record.get("content_hash"), str)
            ):
                queued[custom_id(job)] = record["content_hash"]
            elif kind in _TAKEN and isinstance(job, str):
                latest.pop(custom_id(job), None)
    batches: dict[str, dict[str, str | None]] = {}
    waiting: dict[str, dict[str, str | None]] = {}
    for cid, ((intent, name), content_hash) in latest.items():
        (waiting if intent else batches).setdefault(name, {})[cid] = content_hash
    found = [Intent(label, *intents[label], requests) for label, requests in waiting.items()]
    return Left(batches, tuple(sorted(found, key=lambda intent: intent.at)), frozenset(known))


def in_flight(log: str, backend: str) -> dict[str, dict[str, str | None]]:
    """The remote batches of ``backend`` in ``log`` with, for each, the requests whose result
    no run took (see :func:`left_in`)."""
    return {batch: dict(requests) for batch, requests in left_in(log, backend).batches.items()}


_SENT = frozenset({BatchSubmitted.kind, BatchSubmitting.kind})
_TAKEN = frozenset({RetryScheduled.kind, JobSucceeded.kind, JobFailed.kind})
"""Events that show a job's last request has had its result taken (a cancelled job's has not:
its batch runs on, and a resumed run collects it)."""
