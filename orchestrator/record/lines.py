"""The log's lines in their compact form (log schema 2): what a line leaves out, and how a
reader puts it back.

A line always states its ``job``, ``ts`` and ``kind``. It leaves out

* every field at its default (:data:`~orchestrator.codec.FIELD_DEFAULTS`: a null, an empty
  list or object, a zero token count, a field's declared default);
* ``seq`` when it is the job's next one (one more than the job's previous line's last ``seq``,
  0 for its first line), and ``attempt`` when it is the job's current attempt (one more for an
  ``attempt_started``, 0 before the first); batch-level lines (``job`` null) count the same way;
* what an earlier line of the same job already says (:data:`~orchestrator.codec.CONTEXT_FIELDS`):
  an ``attempt_started``'s ``backend`` when it is the one the job was queued on, a
  ``stream_finished``'s ``tokens`` when they are the sum of the attempt's ``usage`` lines and its
  ``session_id`` when it is the one the attempt's ``session_started`` gave, a terminal line's
  ``attempts`` when it is the line's ``attempt``.

Any of them may be written anyway and then counts as written (a line that stands on its own,
as :func:`~orchestrator.codec.encode_tagged` writes it, reads the same). The writer and every
reader keep the same :class:`LogLines` state, changed by each record in file order by the one
rule in :meth:`LogLines._observe`; it starts afresh at each run (a ``log_header``, or a
``batch_started`` before its line is read) and forgets a job at its terminal line, so it holds
the jobs announced and not yet ended (a batch announces its jobs early: for a big batch that is
most of them, about 110 bytes each). Logs of schema 1 state everything, and read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from orchestrator import codec
from orchestrator.events import (
    EVENT_TYPES,
    TERMINAL_EVENTS,
    AttemptStarted,
    BatchStarted,
    JobQueued,
    SessionStarted,
    StreamFinished,
    Tagged,
    Tokens,
    UsageReported,
)


class _Job:
    """What a job's lines so far say."""

    __slots__ = ("attempt", "backend", "next_seq", "session_id", "usage")

    def __init__(self) -> None:
        self.next_seq = 0
        self.attempt = 0
        self.backend: str | None = None
        self.session_id: str | None = None
        self.usage: Tokens | None = None


_NEW = _Job()  # what a reader knows of a job it has not seen (never changed)


class LogLines:
    """One log's lines as they were written: :meth:`encode` for the writer, :meth:`decode` for a
    reader, each on its own instance. Not safe across tasks."""

    def __init__(self) -> None:
        self._jobs: dict[str | None, _Job] = {}

    def restart(self) -> None:
        """A new run starts (a ``log_header``): its lines count afresh."""
        self._jobs.clear()

    def encode(self, tagged: Tagged) -> bytes:
        """The record's line, newline included, with what the reader can fill in left out."""
        # The log's hot path: dispatch on the exact kind (events are final classes), no patterns.
        event = tagged.event
        kind = type(event)
        line = codec.tagged_to_dict(tagged)
        if kind is BatchStarted:
            self._jobs.clear()
        known = self._jobs.get(tagged.job_id, _NEW)
        if tagged.seq == known.next_seq:
            del line["seq"]
        if tagged.attempt == known.attempt + (kind is AttemptStarted):
            del line["attempt"]
        if kind in _IN_CONTEXT:
            if kind is AttemptStarted:
                if event.backend == known.backend:  # type: ignore[union-attr]
                    del line["backend"]
            elif kind is StreamFinished:
                if event.tokens == known.usage:  # type: ignore[union-attr]
                    del line["tokens"]
                if event.session_id == known.session_id:  # type: ignore[union-attr]
                    del line["session_id"]
            elif event.attempts == tagged.attempt:  # type: ignore[union-attr]
                del line["attempts"]
        self._observe(tagged)
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def decode(self, obj: Mapping[str, Any]) -> Tagged:
        """The record a line (a decoded JSON object) stands for, what it left out filled in.
        Raises :class:`~orchestrator.codec.DecodeError` for a line that does not fit."""
        job = obj.get("job")
        if job is not None and type(job) is not str:
            raise codec.DecodeError("log line has a bad job or kind")
        kind = obj.get("kind")
        if kind == BatchStarted.kind:
            self._jobs.clear()
        known = self._jobs.get(job, _NEW)
        attempt = known.attempt
        if kind in codec.CONTEXT_FIELDS:
            filled = dict(obj)
            if kind == AttemptStarted.kind:
                attempt += 1
                if "backend" not in filled and known.backend is not None:
                    filled["backend"] = known.backend
            elif kind == StreamFinished.kind:
                if "tokens" not in filled:
                    filled["tokens"] = codec.compact_tokens(known.usage)
                if "session_id" not in filled:
                    filled["session_id"] = known.session_id
            elif "attempts" not in filled:  # a terminal line
                filled["attempts"] = filled.get("attempt", attempt)
            obj = filled
        try:
            tagged = codec.decode_tagged(obj, known.next_seq, attempt)
        except codec.DecodeError:
            self._skip(job, obj, known.next_seq, attempt)
            raise
        self._observe(tagged)
        return tagged

    def _skip(self, job: str | None, obj: Mapping[str, Any], next_seq: int, attempt: int) -> None:
        """A line that does not decode (a kind or field from a newer version, say) still counts
        for where the job's seq and attempt stand: a reader that shows it and goes on
        (``orchestrate tail``) reads the job's next lines right. ``attempt`` is the one the line
        would be read with."""
        last = obj.get("seq_end", obj.get("seq", next_seq))
        if type(last) is int:
            self._jobs.setdefault(job, _Job()).next_seq = last + 1
        stated = obj.get("attempt", attempt)
        if type(stated) is int:
            self._jobs.setdefault(job, _Job()).attempt = stated

    def _observe(self, tagged: Tagged) -> None:
        """The one rule both sides follow: what this record tells about its job."""
        jobs = self._jobs
        job = jobs.get(tagged.job_id)
        if job is None:
            job = jobs[tagged.job_id] = _Job()
        job.next_seq = (tagged.seq if tagged.seq_end is None else tagged.seq_end) + 1
        job.attempt = tagged.attempt
        event = tagged.event
        kind = type(event)
        if kind not in _NOTED:  # most lines: a delta, a tool call, a notice
            return
        if kind is JobQueued:
            job.backend = event.backend  # type: ignore[union-attr]
        elif kind is AttemptStarted:
            job.session_id = None
            job.usage = None
        elif kind is SessionStarted:
            job.session_id = event.session_id  # type: ignore[union-attr]
        elif kind is UsageReported:
            tokens: Tokens = event.tokens  # type: ignore[union-attr,assignment]
            job.usage = tokens if job.usage is None else job.usage + tokens
        else:  # the job's end
            del jobs[tagged.job_id]


_NOTED = frozenset({JobQueued, AttemptStarted, SessionStarted, UsageReported, *TERMINAL_EVENTS})
"""The kinds that tell more about a job than where its count stands."""
_IN_CONTEXT = frozenset(EVENT_TYPES[kind] for kind in codec.CONTEXT_FIELDS)
"""The kinds whose line may leave out what earlier lines of the job say (``CONTEXT_FIELDS``)."""
