"""Identical requests are sent once: which job leads, which follow, and how a follower ends.

The rule, in one place. Two jobs of a run are identical when their content hashes are equal
(:attr:`~orchestrator.spec.JobSpec.content_hash`: the rendered request and every setting that
shapes the reply — backend, model, system, messages, prompt, ``max_tokens``, ``temperature``,
``seed``, the backend's options such as tools and ``extra_body``, the output schema and the
batch's model and server; not the id, the row or the metadata). Jobs are matched as they are
announced, against the jobs announced before them in the same run, so the rule needs no job list
up front:

* the first job announced with a hash is its **leader**: it runs as any job does (its own
  retries and timeouts; a follower's are not consulted);
* every later job with that hash is a **follower**: it sends ``job_deduplicated`` naming the
  leader, makes no attempt, and ends with a copy of the leader's terminal event (succeeded or
  failed, with the same error kind and message) as soon as the leader ends, or at once when
  the leader had already ended. Readers of the log take the follower's outcome (text, output,
  tool calls, usage, stop reason) from the leader's events; its cost is 0: paid once.
* A leader a stop left without an end leaves its followers without one too: they end as any
  unstarted job does (skipped). So does a follower whose ``job_deduplicated`` a stop kept from
  being sent: an end with no line naming its leader would read as a job that ended on its own.
* A stop by the spend cap (soft or hard) still ends the followers of leaders that have ended,
  also those not announced yet: they are announced in order up to the last of them (the jobs
  announced on the way that would run are skipped at once), so their known answer costs nothing.

Deliberate samples differ in ``seed`` (it is part of the hash), so they are never merged; a batch
with ``dedupe = false`` sends every job. A follower of a leader that ended in an *earlier* run
of a resumed log is not matched (that leader is not part of this run): the first such job of the
new run leads and is sent again, once.

Memory: one small entry per distinct request announced (its leader's id and, once it ended, the
leader's terminal event), for the whole run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar, cast

import attrs

from orchestrator.events import JobDeduplicated, JobFailed, JobSucceeded, TerminalEvent

J = TypeVar("J")

Shared = JobSucceeded | JobFailed
"""The ends a follower shares with its leader; a leader that ends otherwise was stopped."""


class _Waited(Generic[J]):
    """A leader still running with followers waiting on it."""

    __slots__ = ("job_id", "waiting")

    def __init__(self, job_id: str, waiting: list[J]) -> None:
        self.job_id = job_id
        self.waiting = waiting


@attrs.frozen
class Follow:
    """What a job announced as a follower sends next: its ``job_deduplicated``, and the leader's
    terminal event when the leader has already ended (the follower ends with it at once)."""

    event: JobDeduplicated
    ended: Shared | None


class Dedupe(Generic[J]):
    """The run's map from content hash to leader, among the jobs announced so far.

    Used from the batch's trio thread only. With ``enabled`` false every job leads and nothing
    is kept. A leader's entry is, by its state: its id (running, no follower yet: most requests,
    so no object is made for them), a :class:`_Waited` (running, followers waiting), or its id
    and its end (ended with an outcome to share): the attempt count of a success, the
    ``job_failed`` of a failure. Those pairs hold no object the garbage collector has to visit
    (for a success), which keeps its passes as short as without the map.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._leaders: dict[str, str | _Waited[J] | tuple[str, int | JobFailed]] = {}
        self._succeeded: dict[int, JobSucceeded] = {}  # a success's end by its attempt count
        self.followers = 0
        """Jobs announced as followers so far."""

    def announce(self, job: J, job_id: str, content_hash: str) -> Follow | None:
        """A job is being announced: None when it leads (it runs), else how it follows (it
        waits for its leader unless :attr:`Follow.ended` says the leader has ended)."""
        if not self.enabled:
            return None
        leaders = self._leaders
        found = leaders.get(content_hash)
        if found is None:
            leaders[content_hash] = job_id
            return None
        self.followers += 1
        if type(found) is str:
            leaders[content_hash] = _Waited(found, [job])
            return Follow(JobDeduplicated(leader=found), None)
        if isinstance(found, _Waited):
            found.waiting.append(job)
            return Follow(JobDeduplicated(leader=found.job_id), None)
        leader, ended = cast(tuple[str, int | JobFailed], found)
        if type(ended) is int:
            return Follow(JobDeduplicated(leader=leader), self._succeeded[ended])
        return Follow(JobDeduplicated(leader=leader), cast(JobFailed, ended))

    def answered(self, content_hash: str) -> bool:
        """Whether a job announced now with ``content_hash`` would end at once with its leader's
        outcome (the leader has ended with a success or failure)."""
        return type(self._leaders.get(content_hash)) is tuple

    def answered_any(self) -> bool:
        """Whether any leader has ended with an outcome to share (see :meth:`answered`)."""
        return bool(self._succeeded) or any(type(v) is tuple for v in self._leaders.values())

    def leader_ended(self, content_hash: str, terminal: TerminalEvent) -> Sequence[J]:
        """A job that runs has ended with ``terminal``: the followers waiting on it, to end now
        with that same event. None are returned when the job ended without an outcome to share
        (they then stay unended, for the stop to end); a job announced later with the hash ends
        at once with the event (:attr:`Follow.ended`)."""
        if not self.enabled:
            return ()
        # Exact types, not isinstance of a union: this runs once for every job of the batch.
        ended: int | JobFailed
        if type(terminal) is JobSucceeded:  # equal values: one kept object per attempt count
            ended = terminal.attempts
            self._succeeded.setdefault(ended, terminal)
        elif type(terminal) is JobFailed:
            ended = terminal
        else:
            return ()
        leaders = self._leaders
        found = leaders.get(content_hash)
        if type(found) is str:
            leaders[content_hash] = (found, ended)
        elif isinstance(found, _Waited):
            leaders[content_hash] = (found.job_id, ended)
            return found.waiting
        return ()
