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
    if name == "bigreport":  # ours against the orjson pass, the floors against it, ours against the floors
        assert [label for label, *_ in section.checks()][:6] == [
            "report --json / orjson pass (CPU)",
            "export / orjson pass (CPU)",
            "floor: least summary / orjson pass (CPU)",
            "floor: least export / orjson pass (CPU)",
            "report --json / least summary (CPU)",
            "export / least export (CPU)",
        ]


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


def test_the_report_floors_compute_what_report_and_export_do(tmp_path: object) -> None:
    """The floors of ``bigreport`` are only floors if they do the same work: their figures agree
    with ``report --json`` and their rows with ``export``'s, column for column."""
    import subprocess
    import sys
    from pathlib import Path

    import orjson

    from benchmarks.big import _EXPORT, _LEAST_EXPORT, _LEAST_SUMMARY, _REPORT, _env, write_log

    tmp = Path(str(tmp_path))
    log = tmp / "log.jsonl"
    write_log(log, 50)

    def run(code: str, *args: str) -> bytes:
        return subprocess.run(
            [sys.executable, "-c", code, *args], env=_env(), capture_output=True, check=True
        ).stdout

    least, full = orjson.loads(run(_LEAST_SUMMARY, str(log))), orjson.loads(run(_REPORT, str(log), "--json"))
    assert least["jobs"] == 50 and least.pop("cost_usd") == pytest.approx(full["cost_usd"])
    tokens = least.pop("tokens")
    assert tokens == {kind: full["tokens"][kind] for kind in tokens}
    assert least == {key: full[key] for key in least}
    run(_LEAST_EXPORT, str(log), str(tmp / "least.jsonl"))
    run(_EXPORT, str(log), "-o", str(tmp / "full.jsonl"))
    least_rows = [orjson.loads(line) for line in (tmp / "least.jsonl").read_bytes().splitlines()]
    full_rows = [orjson.loads(line) for line in (tmp / "full.jsonl").read_bytes().splitlines()]
    assert len(least_rows) == 50 and least_rows == [
        {key: row[key] for key in least_rows[0]} for row in full_rows
    ]
