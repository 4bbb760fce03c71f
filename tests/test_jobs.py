"""A batch's jobs as a sequence: held or made from rows a chunk at a time, known without making them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.jobs import CHUNK, Held, Jobs, Rows
from orchestrator.spec import JobSpec


def job(i: int, backend: str = "sim") -> JobSpec:
    return JobSpec(id=f"j{i}", prompt=f"p{i}", backend=backend)


def made(n: int, start: int = 0, backend: str = "sim") -> tuple[Rows, list[int]]:
    """A part of ``n`` jobs made from their numbers, and the numbers made so far."""
    calls: list[int] = []

    def make(compact: int, job_id: str) -> JobSpec:
        calls.append(compact)
        return JobSpec(id=job_id, prompt=f"p{compact}", backend=backend)

    numbers = list(range(start, start + n))
    return Rows(numbers, [f"j{i}" for i in numbers], make, backend), calls


def test_held_jobs_are_a_sequence_equal_to_the_tuple_they_came_from() -> None:
    jobs = Jobs.of([job(0), job(1), job(2)])
    assert jobs == (job(0), job(1), job(2)) and jobs != (job(0),) and Jobs.of(jobs) is jobs
    assert jobs[-1] == job(2) and jobs[1:] == (job(1), job(2)) and list(jobs.ids()) == ["j0", "j1", "j2"]
    with pytest.raises(IndexError):
        jobs[3]
    assert Jobs.of(()) == () and len(Jobs.of(())) == 0


def test_jobs_made_from_rows_are_made_a_chunk_at_a_time_and_only_when_asked_for() -> None:
    rows, calls = made(3 * CHUNK)
    jobs = Jobs([Held([job(-1)]), rows])
    assert len(jobs) == 3 * CHUNK + 1 and jobs.backend_counts() == {"sim": 3 * CHUNK + 1}
    assert jobs.ids()[5] == "j4" and calls == []  # known without making any job
    assert jobs[CHUNK + 2] == job(CHUNK + 1)
    assert calls == list(range(CHUNK, 2 * CHUNK))  # the chunk that holds it, once
    assert jobs[CHUNK + 3] == job(CHUNK + 2) and len(calls) == CHUNK
    assert list(jobs) == [job(i) for i in range(-1, 3 * CHUNK)]


@given(st.lists(st.booleans(), max_size=60), st.integers(0, 3))
def test_a_pick_of_jobs_is_the_jobs_at_those_positions(keep: list[bool], held: int) -> None:
    rows, _ = made(len(keep), start=held)
    jobs = Jobs([Held([job(i) for i in range(held)]), rows])
    positions = [i for i, k in enumerate([True] * held + keep) if k]
    picked = jobs.pick(positions)
    assert list(picked) == [jobs[i] for i in positions]
    assert list(picked.ids()) == [f"j{i}" for i in positions] and len(picked) == len(positions)


@given(st.integers(0, 2 * CHUNK + 12), st.booleans())
def test_content_hashes_from_a_position_are_the_tail_of_all_of_them(start: int, from_rows: bool) -> None:
    rows, _ = made(CHUNK + 5, start=3)
    if from_rows:  # hashes made from the compact rows alone, as a data file's plain rows have them
        rows = Rows(rows.compact, rows.ids(), rows.make, "sim", content_hash=lambda n: f"h{n}")
    jobs = Jobs([Held([job(0), job(1), job(2)]), rows, Held([job(i) for i in range(CHUNK + 8, CHUNK + 12)])])
    every = list(jobs.content_hashes())
    assert len(every) == len(jobs) and list(jobs.content_hashes(start)) == every[start:]


def test_the_jobs_of_one_backend_come_in_groups_alike_made_once_per_uniform_part() -> None:
    openai, calls = made(4, start=10, backend="openai")
    uniform, uniform_calls = made(CHUNK + 3, start=100, backend="openai")
    uniform.uniform = True
    jobs = Jobs([Held([job(0), job(1, "openai")]), openai, uniform])
    assert jobs.backend_counts() == {"sim": 1, "openai": CHUNK + 8} and calls == []
    groups = list(jobs.alike("openai"))
    assert [(g.job.id, list(g.ids)) for g in groups[:5]] == [
        (i, [i]) for i in ["j1", "j10", "j11", "j12", "j13"]
    ]
    assert groups[5].job == JobSpec(id="j100", prompt="p100", backend="openai")
    assert list(groups[5].ids) == [f"j{i}" for i in range(100, 100 + CHUNK + 3)] and len(groups) == 6
    assert uniform_calls == [100]  # one job made for the whole part
    assert [(g.job.id, list(g.ids)) for g in jobs.alike("sim")] == [("j0", ["j0"])]
    picked = jobs.pick([0, 3, 7, 8, 9])  # j0, j11 and three of the uniform part
    assert [(g.job.id, list(g.ids)) for g in picked.alike("openai")] == [
        ("j11", ["j11"]),
        ("j101", ["j101", "j102", "j103"]),
    ]
