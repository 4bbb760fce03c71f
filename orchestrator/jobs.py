"""A batch's jobs in order, held or resolved a chunk at a time: :class:`Jobs`.

A job file of a few jobs holds its :class:`~orchestrator.spec.JobSpec` objects. A data file or
prompts file of a million rows does not: loading checks every row in one pass (every problem is
reported before anything runs) and keeps each good row in a compact form (its raw line or its
tuple of cells) with the job's id; the ``JobSpec`` itself is made again when the runner, a dry
run or a resume plan asks for it, a chunk at a time, and not kept. So a million-row batch
starts without a million ``JobSpec`` objects and never holds them all.

What is known without resolving a job: how many there are, their ids in order, and each one's
backend. Resolving is pure and repeatable: the same position gives an equal ``JobSpec``.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, overload

if TYPE_CHECKING:
    from orchestrator.spec import JobSpec

CHUNK = 512  # jobs resolved at once, and the most a Jobs keeps resolved between two calls


class Alike(NamedTuple):
    """Jobs of one backend that differ only in their id and request text (prompt, system) and
    kept row: the same model, options, ``max_tokens``, retry policy and output schema, and no
    ``messages``. ``job`` is the first of them, ``ids`` all of them in order. A backend's
    preflight checks a group's settings once (see :meth:`Jobs.alike`)."""

    job: JobSpec
    ids: Sequence[str]

    @staticmethod
    def each(jobs: Iterable[JobSpec]) -> list[Alike]:
        """Every job a group of its own."""
        return [Alike(job, (job.id,)) for job in jobs]


class Part(Protocol):
    """A run of jobs of one kind (held, or made from compact rows). ``uniform``: every job of
    the part is alike (see :class:`Alike`) and of one backend."""

    uniform: bool

    def __len__(self) -> int: ...

    def ids(self) -> Sequence[str]:
        """The jobs' ids, in order, without resolving them."""
        ...

    def backend(self, i: int) -> str:
        """The ``i``-th job's backend, without resolving it."""
        ...

    def resolve(self, start: int, stop: int) -> Sequence[JobSpec]:
        """The jobs ``start`` to ``stop`` (positions in this part)."""
        ...


class Held:
    """Jobs held as objects."""

    uniform = False

    def __init__(self, jobs: Sequence[JobSpec]) -> None:
        self.jobs = tuple(jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def ids(self) -> Sequence[str]:
        return [job.id for job in self.jobs]

    def backend(self, i: int) -> str:
        return self.jobs[i].backend

    def resolve(self, start: int, stop: int) -> Sequence[JobSpec]:
        return self.jobs[start:stop]


class Rows:
    """Jobs made from compact rows when asked for: ``make(compact, id)`` builds one job (pure:
    every row was checked when it was loaded); ``backends`` is the one backend of every job, or
    each job's own; ``content_hash(compact)``, when given, is a job's content hash without the
    rest of the job; ``uniform``: every job made is alike (:class:`Alike`: rows that set no
    setting of their own), which needs one backend."""

    def __init__(
        self,
        compact: Sequence[Any],
        ids: Sequence[str],
        make: Callable[[Any, str], JobSpec],
        backends: str | Sequence[str],
        content_hash: Callable[[Any], str] | None = None,
        *,
        uniform: bool = False,
    ) -> None:
        self.compact, self._ids, self.make, self.backends = compact, ids, make, backends
        self.content_hash = content_hash
        self.uniform = uniform and isinstance(backends, str)

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> Sequence[str]:
        return self._ids

    def backend(self, i: int) -> str:
        return self.backends if isinstance(self.backends, str) else self.backends[i]

    def resolve(self, start: int, stop: int) -> Sequence[JobSpec]:
        make, compact, ids = self.make, self.compact, self._ids
        return [make(compact[i], ids[i]) for i in range(start, min(stop, len(ids)))]


class Picked:
    """Some jobs of another :class:`Jobs`, by position in increasing order (what a resume
    leaves to run)."""

    uniform = False

    def __init__(self, base: Jobs, positions: Sequence[int]) -> None:
        self.base, self.positions = base, positions

    def __len__(self) -> int:
        return len(self.positions)

    def ids(self) -> Sequence[str]:
        ids = self.base.ids()
        return [ids[p] for p in self.positions]

    def backend(self, i: int) -> str:
        return self.base.backend(self.positions[i])

    def resolve(self, start: int, stop: int) -> Sequence[JobSpec]:
        base = self.base
        return [base[p] for p in self.positions[start:stop]]


class Jobs(Sequence["JobSpec"]):
    """The jobs of a batch, in order (see the module docstring). A ``Sequence``: ``len``,
    indexing, slices (as tuples), iteration (a chunk resolved at a time), equality with any
    sequence of jobs (a tuple included)."""

    def __init__(self, parts: Iterable[Part] = ()) -> None:
        self.parts = [part for part in parts if len(part)]
        self.starts: list[int] = []
        total = 0
        for part in self.parts:
            self.starts.append(total)
            total += len(part)
        self.total = total
        self._cached: tuple[int, Sequence[JobSpec]] = (0, ())  # (first position, jobs)
        self._ids: Sequence[str] | None = None

    @staticmethod
    def of(jobs: Iterable[JobSpec]) -> Jobs:
        """``jobs`` as a :class:`Jobs` (itself if it is one; else held)."""
        return as_jobs(jobs)

    def __len__(self) -> int:
        return self.total

    def _locate(self, position: int) -> tuple[Part, int]:
        k = bisect.bisect_right(self.starts, position) - 1
        return self.parts[k], position - self.starts[k]

    @overload
    def __getitem__(self, index: int) -> JobSpec: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[JobSpec, ...]: ...

    def __getitem__(self, index: int | slice) -> JobSpec | tuple[JobSpec, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self.total)))
        if index < 0:
            index += self.total
        if not 0 <= index < self.total:
            raise IndexError("job position out of range")
        first, jobs = self._cached
        if not first <= index < first + len(jobs):
            part, offset = self._locate(index)
            if isinstance(part, Held):
                return part.jobs[offset]
            start = offset - offset % CHUNK
            jobs = part.resolve(start, start + CHUNK)
            first = index - (offset - start)
            self._cached = (first, jobs)
        return jobs[index - first]

    def __iter__(self) -> Iterator[JobSpec]:
        for part in self.parts:
            for start in range(0, len(part), CHUNK):
                yield from part.resolve(start, start + CHUNK)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Jobs({self.total} jobs)"

    def ids(self) -> Sequence[str]:
        """Every job's id, in order, without resolving the jobs."""
        if self._ids is None:
            if len(self.parts) == 1:
                self._ids = self.parts[0].ids()
            else:
                self._ids = [job_id for part in self.parts for job_id in part.ids()]
        return self._ids

    def content_hashes(self, start: int = 0) -> Iterator[str]:
        """Every job's content hash from position ``start`` on, in order (made from its row
        alone where it can be)."""
        for first, part in zip(self.starts, self.parts, strict=True):
            skip = max(start - first, 0)
            if skip >= len(part):
                continue
            if isinstance(part, Rows) and part.content_hash is not None:
                yield from map(part.content_hash, itertools.islice(part.compact, skip, None))
                continue
            for offset in range(skip, len(part), CHUNK):
                yield from (job.content_hash for job in part.resolve(offset, offset + CHUNK))

    def backend(self, position: int) -> str:
        """The backend of the job at ``position``, without resolving it."""
        part, offset = self._locate(position)
        return part.backend(offset)

    def backend_counts(self) -> dict[str, int]:
        """How many jobs each backend has, without resolving the jobs."""
        counts: dict[str, int] = {}
        for part in self.parts:
            backends = getattr(part, "backends", None)
            if isinstance(backends, str):
                counts[backends] = counts.get(backends, 0) + len(part)
                continue
            for i in range(len(part)):
                name = part.backend(i)
                counts[name] = counts.get(name, 0) + 1
        return counts

    def alike(self, name: str) -> Iterator[Alike]:
        """The jobs of backend ``name`` in groups of jobs alike (see :class:`Alike`), in order:
        a uniform part (plain rows of a data or prompts file) is one group, resolving one job
        of it; every other job is a group of its own. A preflight of a million plain rows so
        checks their settings once, not a million times."""
        for part in self.parts:
            if isinstance(part, Picked):
                yield from part.base.alike_at(name, part.positions)
            elif part.uniform:
                if part.backend(0) == name:
                    yield Alike(part.resolve(0, 1)[0], part.ids())
            else:
                for start in range(0, len(part), CHUNK):
                    yield from Alike.each(j for j in part.resolve(start, start + CHUNK) if j.backend == name)

    def alike_at(self, name: str, positions: Sequence[int]) -> Iterator[Alike]:
        """:meth:`alike` of the jobs at ``positions`` (increasing) alone."""
        ids, k = self.ids(), 0
        while k < len(positions):
            n = bisect.bisect_right(self.starts, positions[k]) - 1
            part = self.parts[n]
            stop = bisect.bisect_left(positions, self.starts[n] + len(part), k)
            if part.uniform:
                if part.backend(0) == name:
                    yield Alike(self[positions[k]], [ids[p] for p in positions[k:stop]])
            else:
                yield from Alike.each(j for j in (self[p] for p in positions[k:stop]) if j.backend == name)
            k = stop

    def pick(self, positions: Sequence[int]) -> Jobs:
        """The jobs at ``positions`` (increasing), resolved as asked for."""
        return Jobs([Picked(self, positions)])


def as_jobs(jobs: Iterable[JobSpec]) -> Jobs:
    """``jobs`` as a :class:`Jobs` (itself if it is one; else held)."""
    return jobs if isinstance(jobs, Jobs) else Jobs([Held(tuple(jobs))])
