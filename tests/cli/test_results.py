"""``orchestrate --results`` and ``orchestrate export``: the results table through the real command."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import orjson
import pytest

from orchestrator.cli.results import start_results
from orchestrator.config.jobfile import load_job_file
from tests.cli.test_cli import ROOT, orchestrate

FAULTS = ROOT / "jobs" / "faults.toml"


@pytest.fixture
def reviews(tmp_path: Path) -> Path:
    for name in ("reviews.toml", "reviews.csv"):
        shutil.copy(ROOT / "jobs" / name, tmp_path / name)
    return tmp_path / "reviews.toml"


def test_the_reviews_example_gives_a_csv_that_joins_back_to_its_rows_by_id(reviews: Path) -> None:
    proc = orchestrate(str(reviews), "-b", "sim", "-q", "--results", "out.csv", cwd=reviews.parent)
    assert proc.returncode == 0, proc.stderr
    inputs = list(csv.DictReader(io.StringIO((reviews.parent / "reviews.csv").read_text())))
    results = {
        row["id"]: row for row in csv.DictReader(io.StringIO((reviews.parent / "out.csv").read_text()))
    }
    assert len(results) == len(inputs) == 12
    for given in inputs:  # the join: every input row has exactly its result, by id
        result = results[given["review_id"]]
        assert result["row.review_id"] == given["review_id"] and result["row.label"] == given["label"]
        assert result["status"] == "succeeded" and result["text"] and result["backend"] == "sim"


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_export_writes_the_very_bytes_the_run_wrote(tmp_path: Path, suffix: str) -> None:
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    run = orchestrate(
        str(FAULTS), "-b", "sim", "-q", "--log", "run.jsonl", "--results", f"out.{suffix}", cwd=tmp_path
    )
    assert run.returncode == 1, run.stderr  # faults.toml has a job that always fails
    export = orchestrate("export", "run.jsonl", "-o", f"again.{suffix}", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert (tmp_path / f"again.{suffix}").read_bytes() == (tmp_path / f"out.{suffix}").read_bytes()


def test_a_resumed_batch_keeps_each_job_once_and_export_merges_runs_as_report_does(tmp_path: Path) -> None:
    first = orchestrate(str(FAULTS), "-q", "--log", "run.jsonl", "--results", "out.jsonl", cwd=tmp_path)
    assert first.returncode == 1, first.stderr  # faults.toml has a job that always fails
    before = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    failed = [row["id"] for row in before if row["status"] != "succeeded"]
    assert failed
    again = orchestrate(
        str(FAULTS), "-q", "--resume", "run.jsonl", "--retry-failed", "--results", "out.jsonl", cwd=tmp_path
    )
    assert again.returncode == 1, again.stderr
    after = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [row["id"] for row in after] == [row["id"] for row in before]  # each job once, job order
    assert orchestrate("export", "run.jsonl", "-o", "all.jsonl", cwd=tmp_path).returncode == 0
    assert (tmp_path / "all.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()
    assert orchestrate("export", "run.jsonl", "--run", "2", "-o", "two.jsonl", cwd=tmp_path).returncode == 0
    assert [orjson.loads(line)["id"] for line in (tmp_path / "two.jsonl").read_bytes().splitlines()] == failed
    assert orchestrate("export", "run.jsonl", "--failed", "-o", "f.csv", cwd=tmp_path).returncode == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "f.csv").read_text())))
    assert rows and all(row["status"] != "succeeded" for row in rows)


def test_a_resume_starts_the_file_from_the_log_without_the_jobs_it_will_run(tmp_path: Path) -> None:
    run = orchestrate(str(FAULTS), "-b", "sim", "-q", "--log", "run.jsonl", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    spec = load_job_file(FAULTS)
    again = spec.jobs[:2]  # as if the resume plan reran these two
    results = tmp_path / "out.jsonl"
    results.write_bytes(b'{"id": "torn')  # what a killed run may leave
    writer = start_results(str(results), _with(spec, again, tmp_path / "run.jsonl"), resuming=True)
    assert writer is not None
    writer.close()
    ids = [orjson.loads(line)["id"] for line in results.read_bytes().splitlines()]
    assert ids == [job.id for job in spec.jobs[2:]]


def _with(spec: object, jobs: object, log: Path) -> object:
    import attrs

    return attrs.evolve(spec, jobs=tuple(jobs), log=str(log))  # type: ignore[misc, arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--results", "out.txt"], "--results out.txt: name a .jsonl, .csv or .parquet file"),
        (["--no-log", "--results", "out.csv"], "csv is written from the log: drop --no-log"),
        (["--log", "same.jsonl", "--results", "same.jsonl"], "is the log itself"),
    ],
)
def test_a_results_path_the_run_cannot_write_is_refused_before_it_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = orchestrate(str(FAULTS), "-b", "sim", "-q", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "same.jsonl").exists()


def test_the_input_data_file_is_never_overwritten(tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("id,prompt\na,hello\n")
    proc = orchestrate(str(data), "-b", "sim", "-q", "--results", str(data), cwd=tmp_path)
    assert proc.returncode == 2 and "is the batch's own input" in proc.stderr
    assert data.read_text() == "id,prompt\na,hello\n"


def test_the_data_file_a_job_file_names_is_never_overwritten(reviews: Path) -> None:
    before = (reviews.parent / "reviews.csv").read_bytes()
    proc = orchestrate(str(reviews), "-b", "sim", "-q", "--results", "reviews.csv", cwd=reviews.parent)
    assert proc.returncode == 2 and "is the batch's own input" in proc.stderr
    assert (reviews.parent / "reviews.csv").read_bytes() == before


def test_results_can_be_set_in_the_job_file_defaults(tmp_path: Path) -> None:
    job_file = tmp_path / "b.toml"
    job_file.write_text('[defaults]\nbackend = "sim"\nresults = "answers.jsonl"\n[[jobs]]\nprompt = "hi"\n')
    proc = orchestrate(str(job_file), "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads((tmp_path / "answers.jsonl").read_bytes())["status"] == "succeeded"


def test_export_of_what_is_not_a_log_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text("not a log\n")
    proc = orchestrate("export", "x.jsonl", "-o", "out.csv", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert orchestrate("export", "x.jsonl", "-o", "out.txt", cwd=tmp_path).returncode == 2
