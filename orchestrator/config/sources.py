"""Where jobs come from before they are resolved: a job table with its place (:class:`JobSource`),
or a run of plain rows held compactly (:class:`PlainRows`), and how a plain row becomes a job
once one like it has been resolved in full (:class:`PlainJobs`).

A plain job sets nothing but its prompt (and its id, and for a data file with a system template
its system prompt): every other field comes from the defaults, so all plain jobs of one source
differ only in those, their row and their content hash. Loading checks each plain row with a
few cheap tests (the columns it needs are there, its id is a usable one) instead of the full
check of a job table, and keeps it as bytes; :func:`lazy_rows` turns a run of them into a part
of the batch's :class:`~orchestrator.jobs.Jobs` that makes each ``JobSpec`` from those bytes
when the run comes to it, after checking their ids against the others (:class:`Ids`).
"""

from __future__ import annotations

import functools
import gc
import hashlib
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import attrs

from orchestrator import codec
from orchestrator.jobs import Rows
from orchestrator.spec import NO_ROW, JobSpec


@attrs.frozen
class JobSource:
    """A job table and where it came from: ``file`` prefixes its problems, ``path`` is its key path.

    ``row``: the data-file row the table was rendered from (kept with the job), if any."""

    file: str | None
    path: str
    table: Any
    row: Mapping[str, Any] | None = None


@attrs.define(eq=False)
class PlainRows:
    """Plain rows of one source, in order, each kept ``compact`` (its text or bytes) with its
    row (or line) number and its id, ``derived`` (1) when made from the prompt rather than given.

    ``remake(compact)`` gives the row's job table and the row kept with it back (pure: the row
    was checked when it was read); ``label`` says what the numbers count (``row``, ``line``)."""

    name: str
    label: str
    remake: Callable[[Any], tuple[dict[str, Any], Mapping[str, Any] | None]]
    compact: list[Any] = attrs.Factory(list)
    numbers: array[int] = attrs.Factory(lambda: array("L"))
    ids: list[str] = attrs.Factory(list)
    derived: bytearray = attrs.Factory(bytearray)

    def where(self, i: int) -> str:
        return f"{self.name}: {self.label} {self.numbers[i]:,}"

    def source(self, i: int) -> JobSource:
        """The ``i``-th row as a job table to check in full."""
        table, row = self.remake(self.compact[i])
        if not self.derived[i]:
            table = {**table, "id": self.ids[i]}
        return JobSource(self.where(i), "", table, row)


MAX_ROW_PROBLEMS = 100  # a million bad rows are not a million lines on a terminal


def too_many(problems: list[str], start: int, name: str) -> bool:
    """Whether :data:`MAX_ROW_PROBLEMS` or more problems follow ``start``: then only that many
    are kept, and a line saying reading ``name`` stopped."""
    if len(problems) - start < MAX_ROW_PROBLEMS:
        return False
    del problems[start + MAX_ROW_PROBLEMS :]
    problems.append(f"{name}: stopped reading after {MAX_ROW_PROBLEMS} problems")
    return True


P = ParamSpec("P")
R = TypeVar("R")


def collector_paused(load: Callable[P, R]) -> Callable[P, R]:
    """``load`` with Python's cyclic garbage collector paused while it runs (and resumed after,
    if it was running). Loading a big file makes a million lasting objects and no cycles to
    collect: the collector would walk them again and again for nothing (a third of the time)."""

    @functools.wraps(load)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        running = gc.isenabled()
        gc.disable()
        try:
            return load(*args, **kwargs)
        finally:
            if running:
                gc.enable()

    return paused


def derived_id(named: str) -> str:
    """A job's id when it gives none: from its prompt (or conversation), so it stays the same when
    jobs are added or reordered."""
    return "p-" + hashlib.sha256(named.encode()).digest()[:5].hex()  # the hex digest's first 10


BLANK_PROMPT = "empty or whitespace only: nothing to send"
"""What is wrong with a prompt that :func:`blank` finds (after ``prompt: ``)."""


def blank(prompt: str) -> bool:
    """A prompt with nothing to send: empty, or whitespace alone (no backend takes it as a turn;
    the Claude Code CLI refuses it). An empty prompt is allowed only after a conversation that
    ends with a user turn (see :func:`orchestrator.config.resolve.resolve`)."""
    return prompt == "" or prompt.isspace()  # isspace stops at the first other character


def any_blank(prompts: Sequence[str]) -> bool:
    """Whether any of ``prompts`` is :func:`blank`, with no step per prompt in Python."""
    return "" in prompts or any(map(str.isspace, prompts))


def is_plain(table: Any) -> bool:
    """A job table with a prompt and at most an id, both strings (a prompts file's usual line).
    The prompt is not :func:`blank`: an empty one leaves the last turn (and the derived id) to
    the defaults' messages, if any, and a blank one is refused, so such a job is checked in full."""
    return (
        type(table) is dict
        and isinstance(table.get("prompt"), str)
        and not blank(table["prompt"])
        and len(table) <= 2
        and (len(table) == 1 or isinstance(table.get("id"), str))
    )


class PlainJobs:
    """Plain jobs differ only in id, prompt (and ``system`` when it is in ``varying``), row and
    content hash: once one has been resolved in full (``first``, with the content-hash
    ``payload`` it was hashed from), the rest are made from it directly, with no checking left to
    do."""

    def __init__(self, first: JobSpec, payload: Mapping[str, Any], *, system: bool = False) -> None:
        varying = {"id", "prompt", "content_hash", "row", *(("system",) if system else ())}
        self.system = system
        self.fields = {f.name: getattr(first, f.name) for f in attrs.fields(JobSpec) if f.name not in varying}
        self.payload = dict(payload)
        self.backend: str = first.backend

    def content_hash(self, table: Mapping[str, Any]) -> str:
        """The content hash of the job of a plain ``table`` (as :meth:`job` gives it)."""
        payload = self.payload
        payload["prompt"] = table["prompt"]
        if self.system:
            payload["system"] = table["system"]
        return codec.content_hash(payload)

    def job(
        self, table: Mapping[str, Any], job_id: str | None = None, row: Mapping[str, Any] | None = None
    ) -> JobSpec:
        """The job of a plain ``table`` (its ``id``, else ``job_id``, else derived)."""
        prompt = table["prompt"]
        payload = self.payload
        payload["prompt"] = prompt  # the only hashed fields a plain job sets
        if self.system:
            system = payload["system"] = table["system"]
            return JobSpec(
                id=job_id or table.get("id") or derived_id(prompt),
                prompt=prompt,
                system=system,
                content_hash=codec.content_hash(payload),
                row=NO_ROW if row is None else row,
                **self.fields,
            )
        return JobSpec(
            id=job_id or table.get("id") or derived_id(prompt),
            prompt=prompt,
            content_hash=codec.content_hash(payload),
            row=NO_ROW if row is None else row,
            **self.fields,
        )


class Ids:
    """The ids taken so far, for duplicates. Where an id was taken is kept for job tables; for
    plain rows it is looked up when a duplicate is reported (a million rows keep no million
    place names)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.places: dict[str, str] = {}
        self.rows: list[PlainRows] = []

    def take(self, job_id: str, *, derived: bool) -> str | None:
        """The id the job gets: ``job_id``, or for a ``derived`` one already taken (equal prompts
        without ids are legitimate; they are one request, sent once unless their seeds differ:
        see orchestrator.run.dedupe) ``job_id-2``, ``-3``...; None
        for a given id already taken."""
        seen = self.seen
        if job_id in seen:
            if not derived:
                return None
            n = 2
            while f"{job_id}-{n}" in seen:
                n += 1
            job_id = f"{job_id}-{n}"
        seen.add(job_id)
        return job_id

    def where(self, job_id: str) -> str:
        """Where ``job_id`` was first taken."""
        place = self.places.get(job_id)
        if place is not None:
            return place
        for rows in self.rows:
            try:
                return rows.where(rows.ids.index(job_id))
            except ValueError:
                continue
        return "an earlier job"  # a derived id given a suffix, taken again by a given one


def lazy_rows(rows: PlainRows, plain: PlainJobs, ids: Ids, problems: list[str]) -> Rows | None:
    """Every plain row after the first as a part of the batch whose jobs are made from ``plain``
    when asked for; duplicate ids are problems. None when only the first row was there."""
    ids.rows.append(rows)
    given = rows.ids[1:]
    fresh = set(given)
    if len(fresh) == len(given) and ids.seen.isdisjoint(fresh):
        ids.seen |= fresh  # the usual case, at C speed: no id repeats
        taken = given
    else:
        taken = []
        take, derived = ids.take, rows.derived
        start = len(problems)
        for i in range(1, len(rows.ids)):
            job_id = take(rows.ids[i], derived=bool(derived[i]))
            if job_id is None:
                if too_many(problems, start, rows.name):
                    break
                problems.append(
                    f"{rows.where(i)}: id: duplicate id {rows.ids[i]!r} (also at {ids.where(rows.ids[i])})"
                )
                continue
            if job_id != rows.ids[i]:  # a numbered derived id: where it is, for a later repeat
                ids.places[job_id] = rows.where(i)
            taken.append(job_id)
    if not taken:
        return None
    remake, job = rows.remake, plain.job

    def make(compact: Any, job_id: str) -> JobSpec:
        table, row = remake(compact)
        return job(table, job_id, row)

    def content_hash(compact: Any) -> str:
        return plain.content_hash(remake(compact)[0])

    # Rows with a duplicate id were reported: nothing runs, so the part need not leave them out.
    compact = rows.compact[1:] if len(taken) == len(given) else []
    return Rows(compact, taken, make, plain.backend, content_hash, uniform=True)
