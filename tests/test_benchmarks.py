"""Every core and big-batch benchmark runs in quick mode (tiny sizes, no targets), so none rots."""

from __future__ import annotations

import pytest

from benchmarks.big import BIG
from benchmarks.core import CORE
from benchmarks.table import Row, Section, meets


@pytest.mark.parametrize("name", sorted([*CORE, *BIG]))
def test_benchmark_runs_in_quick_mode(name: str) -> None:
    section = {**CORE, **BIG}[name](True)
    assert section.rows and all(row.values for row in section.rows)
    assert all(value >= 0 for row in section.rows for value in row.values)
    markdown = section.markdown()
    assert markdown.startswith(f"### {section.title}") and "target" in markdown


@pytest.mark.parametrize(
    "value, target, expected",
    [(0.9, ">= 0.8", True), (0.7, ">= 0.8", False), (120.0, "<= +150 ms", True), (1.03, "<= 1.02", False)],
)
def test_targets_are_read_from_their_text(value: float, target: str, expected: bool) -> None:
    assert meets(value, target) is expected
    assert meets(value, "(for information)") is None


def test_a_missed_target_is_said_plainly() -> None:
    section = Section("x", [Row("r", [1.0, 2.0], "s")], ratio=(1.5, "<= 1.02", 1.1))
    assert "**not met**" in section.markdown() and "reference: 1.1" in section.markdown()


def test_the_datasets_benchmark_runs_at_a_tiny_size(tmp_path: object) -> None:
    from pathlib import Path

    from benchmarks.datasets import job_file, measure, write_files

    jsonl, csv_path = write_files(Path(str(tmp_path)), 50)
    assert measure("orjson", jsonl)["n"] == 50 and measure("csv", csv_path)["n"] == 51  # with the header
    assert measure("load", job_file(csv_path))["n"] == 50 and measure("render", job_file(jsonl))["n"] == 50
    started = measure("start", job_file(jsonl))
    assert started["n"] == 50 and 0 < started["first_cpu"] <= started["cpu"]


def test_the_dedupe_benchmark_runs_at_a_tiny_size() -> None:
    from benchmarks.dedupe import batch_cpu, bookkeeping

    kept = bookkeeping(100, 1)
    assert kept["on"] > 0 and kept["off"] > 0
    found = batch_cpu([f"q{i // 2}" for i in range(20)], 1)
    assert (found[True][1], found[False][1]) == (10, 20)  # attempts: each request once, or every job
