"""Which records share a log line, and when the writer writes it: how the log stays small without
changing what it says.

A reply streams as many small text (or thinking) deltas. The bus carries every one of them to
its subscribers; the log writes a run of them that follow one another in one attempt of one
job as one record: their concatenated text, the first delta's ``seq`` and ``ts`` (so the time
to first token stays exact) and the last delta's ``seq`` as ``seq_end``. Per-job order is kept
and every ``seq`` is covered exactly once, so folding the log (report, resume, tail, the
aggregation) gives what folding the live events gives.

Records of one job that follow one another in the log share a line (log schema 3: see
:mod:`~orchestrator.record.lines`), so the writer holds a job's records a while and writes
them together. A job's held records are written

* with the batch of events that brought them, when they hold the job's ``job_queued`` (so jobs
  appear in the log in the order they were queued, which ``jobs_skipped`` ranges count by) or a
  durable event (a terminal event: a job never counts as done before it is on disk);
* before any batch-level event (``job`` null), so those stay where the bus put them;
* once a batch arrives more than :data:`HOLD_S` seconds of batch time (event ``ts``) after
  their first record, or when the run ends.

So a job's attempt, from ``attempt_started`` to its terminal event, is usually one line,
``orchestrate tail`` lags a live job by about :data:`HOLD_S`, and a crash loses only held
records of attempts that had not ended (a resumed run runs them again anyway). With
``fsync = "always"`` the writer holds nothing (``hold_s`` 0): every event is written with its
batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.events import DURABLE_EVENTS, SPANNED_EVENTS, JobQueued, Tagged, TextDelta, ThinkingDelta

HOLD_S = 2.0
"""Seconds (of batch time: event ``ts``) a job's records may wait for more."""

_DURABLE = frozenset(DURABLE_EVENTS)
_SPANNED = frozenset(SPANNED_EVENTS)


class _Held:
    """One job's records waiting for a line: the last may be an open run of deltas."""

    __slots__ = ("first_ts", "job", "records", "run", "run_end", "texts", "written")

    def __init__(self, tagged: Tagged, job: str) -> None:
        self.job = job
        self.first_ts = tagged.ts
        self.records: list[Tagged] = []
        self.run: Tagged | None = None  # the first delta of the open run of deltas
        self.texts: list[str] | None = None  # the run's texts, once a second delta joined it
        self.run_end = 0  # the run's last seq
        self.written = False  # due with this batch (a new job's, or ended by a durable event)
        self.add(tagged, type(tagged.event))

    def add(self, tagged: Tagged, kind: type) -> None:
        """Hold ``tagged``, whose event is of class ``kind``."""
        run = self.run
        if kind in _SPANNED:
            if run is not None:
                if (
                    type(run.event) is kind
                    and run.attempt == tagged.attempt
                    and self.run_end + 1 == tagged.seq
                ):
                    if self.texts is None:
                        self.texts = [run.event.text]
                    self.texts.append(tagged.event.text)  # type: ignore[union-attr]
                    self.run_end = tagged.last_seq
                    return
                self.records.append(self._joined(run))
            self.run, self.texts, self.run_end = tagged, None, tagged.last_seq
            return
        if run is not None:
            self.records.append(self._joined(run))
            self.run = None
        self.records.append(tagged)

    def line(self) -> list[Tagged]:
        """The records, any open run of deltas closed."""
        if self.run is not None:
            self.records.append(self._joined(self.run))
            self.run = None
        return self.records

    def _joined(self, first: Tagged) -> Tagged:
        """The open run of deltas that ``first`` starts as one record."""
        texts = self.texts
        if texts is None:
            return first
        joined = "".join(texts)
        event = TextDelta(joined) if type(first.event) is TextDelta else ThinkingDelta(joined)
        return Tagged(first.job_id, first.attempt, first.seq, first.ts, event, self.run_end)


class HeldLines:
    """The log writer's holding: feed it the events in bus order, write each list it gives as
    one line (see the module docstring).

    Not safe across tasks; the log writer calls it from the bus task only.
    """

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self._held: dict[str, _Held] = {}  # job -> its held records, oldest first (insertion order)
        self._due: list[_Held] = []  # written at the end of this batch, in this order

    def feed(self, events: Iterable[Tagged]) -> list[list[Tagged]]:
        """The lines to write now for ``events``, each a list of records of one job (a
        batch-level record alone); records that may still share a line are held back."""
        out: list[list[Tagged]] = []
        held, due = self._held, self._due
        latest = None
        for tagged in events:
            job = tagged.job_id
            latest = tagged.ts
            if job is None:
                out.extend(self.drain())
                out.append([tagged])
                continue
            kind = type(tagged.event)
            group = held.get(job)
            if group is None:
                group = held[job] = _Held(tagged, job)
                if kind is JobQueued:
                    group.written = True
                    due.append(group)
            else:
                group.add(tagged, kind)
            if kind in _DURABLE:
                del held[job]  # the job's next record starts a line of its own
                if not group.written:
                    group.written = True
                    due.append(group)
        if due:
            for group in due:
                out.append(group.line())
                if held.get(group.job) is group:
                    del held[group.job]
            due.clear()
        if held and latest is not None:
            horizon = latest - self.hold_s
            stale = []
            for job, group in held.items():  # oldest first: stop at the first young one
                if group.first_ts > horizon:
                    break
                stale.append(job)
            out.extend(held.pop(job).line() for job in stale)
        return out

    def drain(self) -> list[list[Tagged]]:
        """Every held line, due ones first, then oldest first; nothing is held afterwards."""
        out = [group.line() for group in self._due]
        out.extend(group.line() for group in self._held.values() if not group.written)
        self._due.clear()
        self._held.clear()
        return out


def group_lines(events: Iterable[Tagged]) -> list[list[Tagged]]:
    """``events`` as the log writer would write them if they came in one batch: every run of
    deltas joined, consecutive records of a job on one line as far as the holding rule lets
    them. Pure."""
    held = HeldLines(hold_s=float("inf"))
    return [*held.feed(events), *held.drain()]


def coalesce(events: Iterable[Tagged]) -> list[Tagged]:
    """``events`` as the log would hold them if none were written before the end: every run of
    deltas joined. Pure. Joining is associative: coalescing a log (whose runs were cut by the
    writer's flushes) gives the same records as coalescing the live events it recorded."""
    return [t for line in group_lines(events) for t in line]
