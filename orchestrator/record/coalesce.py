"""Runs of deltas as one log line: how the log stays small without changing what it says.

A reply streams as many small text (or thinking) deltas. The bus carries every one of them to
its subscribers; the log writes a run of them that follow one another in one attempt of one
job as one record: their concatenated text, the first delta's ``seq`` and ``ts`` (so the time
to first token stays exact) and the last delta's ``seq`` as ``seq_end``. Per-job order is kept
and every ``seq`` is covered exactly once, so folding the log (report, resume, tail, the
aggregation) gives what folding the live events gives.

A run is held until its job's next other event, a delta of another kind or attempt, or
:data:`HOLD_S` seconds of later events, whichever comes first (or the end of the run). So a
job's terminal event is never written before its text, ``orchestrate tail`` lags a live reply
by at most about a second, and a crash loses only the held text of attempts that had not
ended (a resumed run runs them again anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestrator.events import SPANNED_EVENTS, Tagged, TextDelta, ThinkingDelta

HOLD_S = 1.0
"""Seconds (of batch time: event ``ts``) a run of deltas may wait for more."""


class DeltaRuns:
    """The log writer's coalescing state: feed it the events in bus order, write what it gives.

    Not safe across tasks; the log writer calls it from the bus task only.
    """

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        # job -> its open run [first record, texts, last seq], oldest first (insertion order)
        self._open: dict[str | None, list[Any]] = {}

    def feed(self, events: Iterable[Tagged]) -> list[Tagged]:
        """The records to write now for ``events``: every event, runs of deltas joined; runs
        that may still grow are held back (see the module docstring)."""
        out: list[Tagged] = []
        held = self._open
        latest = None
        for tagged in events:
            job = tagged.job_id
            event = tagged.event
            latest = tagged.ts
            if type(event) in SPANNED_EVENTS:
                run = held.get(job)
                if run is not None:
                    first = run[0]
                    if (
                        type(first.event) is type(event)
                        and first.attempt == tagged.attempt
                        and run[2] + 1 == tagged.seq
                    ):
                        run[1].append(event.text)  # type: ignore[union-attr]
                        run[2] = tagged.last_seq
                        continue
                    out.append(_joined(*held.pop(job)))
                held[job] = [tagged, [event.text], tagged.last_seq]  # type: ignore[union-attr]
            else:
                if held:
                    run = held.pop(job, None)
                    if run is not None:
                        out.append(_joined(*run))
                out.append(tagged)
        if held and latest is not None:
            horizon = latest - self.hold_s
            stale = []
            for job, run in held.items():  # oldest first: stop at the first young run
                if run[0].ts > horizon:
                    break
                stale.append(job)
            out.extend(_joined(*held.pop(job)) for job in stale)
        return out

    def drain(self) -> list[Tagged]:
        """Every held run, oldest first; nothing is held afterwards."""
        out = [_joined(*run) for run in self._open.values()]
        self._open.clear()
        return out


def coalesce(events: Iterable[Tagged]) -> list[Tagged]:
    """``events`` as the log would hold them if none were written before the end: every run of
    deltas joined. Pure. Joining is associative: coalescing a log (whose runs were cut by the
    writer's flushes) gives the same records as coalescing the live events it recorded."""
    runs = DeltaRuns(hold_s=float("inf"))
    return [*runs.feed(events), *runs.drain()]


def _joined(first: Tagged, texts: list[str], last: int) -> Tagged:
    if len(texts) == 1:
        return first
    joined = "".join(texts)
    event = TextDelta(joined) if type(first.event) is TextDelta else ThinkingDelta(joined)
    return Tagged(first.job_id, first.attempt, first.seq, first.ts, event, last)
