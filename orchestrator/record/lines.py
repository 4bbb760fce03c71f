"""The log's lines in their compact form (log schema 3): what a line leaves out, how a reader
puts it back, and how records of one job share a line.

A line always states its ``job``, ``ts`` and ``kind``. It leaves out

* every field at its default (:data:`~orchestrator.codec.FIELD_DEFAULTS`: a null, an empty
  list or object, a zero token count, a field's declared default);
* ``seq`` when it is the job's next one (one more than the job's previous record's last ``seq``,
  0 for its first record), and ``attempt`` when it is the job's current attempt (one more for
  an ``attempt_started``, 0 before the first); batch-level lines (``job`` null) count the same way;
* what an earlier record of the same job already says (:data:`~orchestrator.codec.CONTEXT_FIELDS`):
  an ``attempt_started``'s ``backend`` when it is the one the job was queued on, a
  ``stream_finished``'s ``tokens`` when they are the sum of the attempt's ``usage`` records and
  its ``session_id`` when it is the one the attempt's ``session_started`` gave, a terminal
  record's ``attempts`` when it is the record's ``attempt``.

Any of them may be written anyway and then counts as written (a line that stands on its own,
as :func:`~orchestrator.codec.encode_tagged` writes it, reads the same).

Records of one job that follow one another may share a line (schema 3; which ones and when is
the writer's choice: :mod:`~orchestrator.record.coalesce`). The line is the first record as
above, plus ``"then"``: the others, in order, each a list ``[kind, dt, fields]`` where ``dt``
is the record's ``ts`` in whole microseconds after the record before it (left out when 0) and
``fields`` the object of the record's fields and ``seq``, ``attempt`` or ``seq_end`` by the
rules above (left out when empty). A ``ts`` that is not a whole number of microseconds is
stated in ``fields`` instead of ``dt``. For example::

    {"job":"q1","ts":0.5,"kind":"attempt_started","then":[["text_delta",300000,
     {"seq_end":9,"text":"Hello"}],["stream_finished",600000,{"stop_reason":"end_turn"}],
     ["job_succeeded",12]]}

The writer and every reader keep the same :class:`LogLines` state, changed by each record in
file order by the one rule in :meth:`LogLines._observe`; it starts afresh at each run (a
``log_header``, or a ``batch_started`` before its line is read) and forgets a job at its
terminal record, so it holds the jobs announced and not yet ended (a batch announces its jobs
early: for a big batch that is most of them, about 110 bytes each). Logs of schemas 1 and 2
(one record a line) read the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from orchestrator import codec
from orchestrator.events import (
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
    """One log's lines as they were written: :meth:`encode_line` for the writer,
    :meth:`decode_line` for a reader, each on its own instance. Not safe across tasks."""

    def __init__(self) -> None:
        self._jobs: dict[str | None, _Job] = {}

    def restart(self) -> None:
        """A new run starts (a ``log_header``): its lines count afresh."""
        self._jobs.clear()

    def encode(self, tagged: Tagged) -> bytes:
        """The record's line, newline included, with what the reader can fill in left out."""
        return self.encode_line((tagged,))

    def encode_line(self, records: Sequence[Tagged]) -> bytes:
        """One line, newline included, for ``records``: consecutive records of one job (at
        least one), the first as :meth:`encode` writes it, the others in its ``then`` list.
        Each record counts as written."""
        jobs, observe = self._jobs, self._observe
        line: dict[str, Any] = {}
        then: list[list[Any]] = []
        micros: int | None = None
        for tagged in records:
            kind = type(tagged.event)
            if kind is BatchStarted:
                jobs.clear()
            known = jobs.get(tagged.job_id)
            if not line:
                line = _HEAD[kind](tagged, known or _NEW)
                micros = _micros(tagged.ts)
                observe(tagged, known)
                continue
            fields = _ITEM[kind](tagged, known or _NEW)
            observe(tagged, known)
            ts = tagged.ts
            at = _micros(ts)
            if at is not None and micros is not None and at / 1e6 == ts:
                dt = at - micros
            else:  # not a whole number of microseconds: stated as it is
                fields["ts"] = ts
                dt = 0
            micros = at
            if fields:
                then.append([kind.kind, dt, fields] if dt else [kind.kind, fields])
            else:
                then.append([kind.kind, dt] if dt else [kind.kind])
        if then:
            line[THEN] = then
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def decode(self, obj: Mapping[str, Any]) -> Tagged:
        """The record a line of one record (a decoded JSON object) stands for, what it left out
        filled in. Raises :class:`~orchestrator.codec.DecodeError` for a line that does not fit
        (a line with a ``then`` list among them: see :meth:`decode_line`)."""
        job = obj.get("job")
        if job is not None and type(job) is not str:
            raise codec.DecodeError("log line has a bad job or kind")
        return self._read(obj.get("kind"), obj, job, None, top=True, more=False)

    def decode_line(self, obj: Mapping[str, Any]) -> list[Tagged]:
        """The records a line (a decoded JSON object) stands for, in order, what they left out
        filled in. Raises :class:`~orchestrator.codec.DecodeError` for a line that does not fit;
        the records before the one that does not still count (see :meth:`_skip`)."""
        then = obj.get(THEN)
        if then is None:
            return [self.decode(obj)]
        return self._line(obj, then, each=False)  # type: ignore[return-value]

    def decode_each(self, obj: Mapping[str, Any]) -> list[Tagged | codec.DecodeError]:
        """What :meth:`decode_line` gives, but a record that does not fit is the
        :class:`~orchestrator.codec.DecodeError` it raised, in its place, and the records after
        it are read as usual: for a reader that shows each record and goes on (``orchestrate
        tail``), so one record from a newer version hides no other (its job's end, say). A
        line of a ``then`` list gives one entry for the line's own record, then one per item.
        Raises DecodeError only for a line whose ``job`` or ``then`` does not fit."""
        then = obj.get(THEN)
        if then is None:
            try:
                return [self.decode(obj)]
            except codec.DecodeError as exc:
                return [exc]
        return self._line(obj, then, each=True)

    def _line(self, obj: Mapping[str, Any], then: Any, *, each: bool) -> list[Tagged | codec.DecodeError]:
        """A line with a ``then`` list: the first error raised (``each`` false), or each in its place."""
        job = obj.get("job")
        if job is not None and type(job) is not str:
            raise codec.DecodeError("log line has a bad job or kind")
        if type(then) is not list:
            raise codec.DecodeError("log line has a bad then")
        out: list[Tagged | codec.DecodeError] = []
        try:
            first = self._read(obj.get("kind"), obj, job, None, top=True, more=True)
        except codec.DecodeError as exc:
            if not each:
                for rest in then:
                    self._skip_item(job, rest)
                raise
            out.append(exc)
            ts = obj.get("ts")
            micros = _micros(ts) if isinstance(ts, int | float) else None
        else:
            out.append(first)
            micros = _micros(first.ts)
        for index, item in enumerate(then):
            try:
                size = len(item) if type(item) is list else 0
                if size == 3 and type(item[1]) is int and type(item[2]) is dict:  # the usual shapes
                    kind, dt, fields = item
                elif size == 2 and type(item[1]) is dict:
                    kind, dt, fields = item[0], 0, item[1]
                else:
                    kind, dt, fields = _item(item)
                if "ts" in fields:
                    if dt:
                        raise codec.DecodeError("log line has a record with both dt and ts")
                    tagged = self._read(kind, fields, job, None, top=False, more=False)
                    micros = _micros(tagged.ts)
                else:
                    if micros is None:
                        raise codec.DecodeError("log line lacks 'ts'")
                    micros += dt
                    tagged = self._read(kind, fields, job, micros / 1e6, top=False, more=False)
            except codec.DecodeError as exc:
                if not each:
                    for rest in then[index + 1 :]:
                        self._skip_item(job, rest)
                    raise
                out.append(exc)
                continue
            out.append(tagged)
        return out

    def _read(
        self, kind: Any, obj: Mapping[str, Any], job: str | None, ts: float | None, *, top: bool, more: bool
    ) -> Tagged:
        """One record: ``obj`` is a whole line (``top``) or the fields of a ``then`` record."""
        if kind == BatchStarted.kind:
            self._jobs.clear()
        stated = self._jobs.get(job)
        known = stated or _NEW
        attempt = known.attempt
        if type(kind) is not str:  # a list or an object: not even a key to look a kind up by
            self._skip(job, obj, known.next_seq, attempt)
            raise codec.DecodeError("log line has a bad job or kind")
        if kind in codec.CONTEXT_FIELDS:
            filled = dict(obj)
            if kind == AttemptStarted.kind:
                attempt += 1
                if "backend" not in filled and known.backend is not None:
                    filled["backend"] = known.backend
            elif kind == StreamFinished.kind:
                if "tokens" not in filled:
                    filled["tokens"] = known.usage  # a Tokens: the reader takes it as it is
                if "session_id" not in filled:
                    filled["session_id"] = known.session_id
            elif "attempts" not in filled:  # a terminal line
                filled["attempts"] = filled.get("attempt", attempt)
            obj = filled
        try:
            if top:
                tagged = codec.decode_tagged(obj, known.next_seq, attempt, more=more)
            else:
                tagged = codec.decode_fields(kind, obj, job, known.next_seq, attempt, ts)  # type: ignore[arg-type]
        except codec.DecodeError:
            self._skip(job, obj, known.next_seq, attempt)
            raise
        self._observe(tagged, stated)
        return tagged

    def _skip_item(self, job: str | None, item: Any) -> None:
        """A ``then`` record after one that did not decode: counted as :meth:`_skip` counts."""
        known = self._jobs.get(job, _NEW)
        fields = item[-1] if type(item) is list and item and type(item[-1]) is dict else {}
        self._skip(job, fields, known.next_seq, known.attempt)

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

    def _observe(self, tagged: Tagged, job: _Job | None) -> None:
        """The one rule both sides follow: what this record tells about its job. ``job`` is
        what the lines before said of it (None: nothing)."""
        jobs = self._jobs
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


def _micros(ts: float) -> int | None:
    """``ts`` in whole microseconds (None: not a finite number of them; a ts near the float
    limit is finite, its microseconds are not)."""
    try:
        return round(ts * 1e6)
    except (OverflowError, ValueError):  # infinite, or not a number
        return None


_EMPTY: dict[str, Any] = {}


def _item(item: Any) -> tuple[Any, int, Mapping[str, Any]]:
    """A ``then`` record's kind, microseconds after the record before, and fields."""
    if type(item) is not list or not 1 <= len(item) <= 3:
        raise codec.DecodeError("log line has a bad record in then")
    kind, dt, fields = item[0], 0, _EMPTY
    if len(item) > 1:
        if type(item[1]) is int:
            dt = item[1]
            if len(item) == 3:
                fields = item[2]
        elif len(item) == 2:
            fields = item[1]
        if type(fields) is not dict or (len(item) == 3 and type(item[1]) is not int):
            raise codec.DecodeError("log line has a bad record in then")
    return kind, dt, fields


THEN = "then"
"""The key of a line's further records (log schema 3)."""


def records_of(line: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each record of a line (a decoded JSON object) as its kind and the object holding its
    fields, unchecked and nothing filled in: for a reader that looks at a few fields of a few
    kinds only (the resume plan). The job is the line's ``job``. A record whose kind is not a
    string (a damaged line) is left out: no kind a reader looks for, nor a key to look one up by."""
    kind = line.get("kind")
    if type(kind) is str:
        yield kind, line
    then = line.get(THEN)
    if type(then) is list:
        for item in then:
            if type(item) is list and item and type(item[0]) is str:
                yield item[0], item[-1] if type(item[-1]) is dict else _EMPTY


def _omitted(cls: type) -> dict[str, str]:
    """What a record of ``cls`` leaves out when it holds it (as expressions of the record ``t``
    and ``k``, the :class:`_Job` the lines before say): its ``seq`` and ``attempt`` when they
    are the job's next, and what :data:`~orchestrator.codec.CONTEXT_FIELDS` says earlier
    records give (the rules the reader's :meth:`LogLines._read` undoes)."""
    omit = {"seq": "k.next_seq", "attempt": "k.attempt + 1" if cls is AttemptStarted else "k.attempt"}
    for name in codec.CONTEXT_FIELDS.get(cls.kind, ()):  # type: ignore[attr-defined]
        omit[name] = _FROM_CONTEXT[name]
    return omit


_FROM_CONTEXT = {
    "backend": "k.backend",
    "tokens": "k.usage",
    "session_id": "k.session_id",
    "attempts": "t.attempt",
}
"""Per field of :data:`~orchestrator.codec.CONTEXT_FIELDS`, what earlier records say it is."""
_HEAD = codec.line_builders(_omitted, head=True)
"""Per event class: a line's first record, as a dict, what the reader knows left out."""
_ITEM = codec.line_builders(_omitted, head=False)
"""Per event class: the fields of a record in a line's ``then``, what the reader knows left out."""
_NOTED = frozenset({JobQueued, AttemptStarted, SessionStarted, UsageReported, *TERMINAL_EVENTS})
"""The kinds that tell more about a job than where its count stands."""
