"""The `orchestrate` command as a user runs it: a real subprocess, real files, exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from orchestrator.record.log import read_log

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "bad_inputs"


def orchestrate(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_faults_example_retries_and_exits_1_with_delays_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "faults.jsonl"
    proc = orchestrate(str(ROOT / "jobs" / "faults.toml"), "--log", str(log), "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    summary = orjson.loads(proc.stdout)
    assert summary["failed"] == 1 and summary["succeeded"] == summary["jobs"] - 1 and summary["retries"] >= 5
    assert summary["failures"] == {"bad_request": 1}
    records = list(read_log(log))
    assert records[0].header is not None and records[0].header.job_file.endswith("faults.toml")
    retries = [r.tagged.event for r in records if r.tagged and r.tagged.event.kind == "retry_scheduled"]
    assert retries and all(e.delay_s >= 0 for e in retries)
    assert {e.error_kind for e in retries} >= {
        "rate_limited",
        "overloaded",
        "connection",
        "timeout_idle",
        "server_error",
    }
    assert any(e.delay_s >= 0.5 for e in retries if e.error_kind == "rate_limited")  # Retry-After honoured


def test_sim_batch_succeeds_and_prints_a_summary(tmp_path: Path) -> None:
    proc = orchestrate(
        str(ROOT / "jobs" / "faults.toml"), "--backend", "sim", "--no-log", "-c", "8", cwd=tmp_path
    )
    assert "batch summary" in proc.stdout and "bad-request" in proc.stdout
    assert not (tmp_path / "runs").exists()


def test_default_log_goes_under_runs(tmp_path: Path) -> None:
    job = tmp_path / "tiny.toml"
    job.write_text('[defaults.sim]\nttft = 0\n[[jobs]]\nprompt = "hi"\n')
    proc = orchestrate(str(job), "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (log,) = (tmp_path / "runs").glob("tiny-*.jsonl")
    kinds = [r.tagged.event.kind for r in read_log(log) if r.tagged]
    assert kinds[0] == "batch_started" and kinds[-1] == "batch_finished" and "text_delta" in kinds


def test_log_to_stdout_is_pure_jsonl(tmp_path: Path) -> None:
    job = tmp_path / "tiny.toml"
    job.write_text('[defaults.sim]\nttft = 0\n[[jobs]]\nprompt = "hi"\n')
    proc = orchestrate(str(job), "--log", "-", cwd=tmp_path)
    assert proc.returncode == 0
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["kind"] == "log_header" and lines[-1]["kind"] == "batch_finished"
    assert "batch summary" in proc.stderr


def test_a_10_mb_prompt_is_not_an_error(tmp_path: Path) -> None:
    job = tmp_path / "huge.toml"
    job.write_text('[defaults.sim]\nttft = 0\n[[jobs]]\nprompt = "' + "x" * 10_000_000 + '"\n')
    proc = orchestrate(str(job), "--no-log", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert orjson.loads(proc.stdout)["tokens"]["input"] == 2_500_001


CASES = sorted(p.stem for p in BAD.glob("*.toml"))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_corpus(case: str, tmp_path: Path) -> None:
    for item in BAD.iterdir():
        shutil.copy(item, tmp_path / item.name)
    proc = orchestrate(f"{case}.toml", cwd=tmp_path)
    expected = (BAD / f"{case}.expected").read_text()
    assert proc.returncode == 2
    assert proc.stderr == expected
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "runs").exists()  # nothing that could pass for a run


@pytest.mark.parametrize(
    "setup, arg, message",
    [
        (lambda d: (d / "dir.toml").mkdir(), "dir.toml", "dir.toml: is a directory, not a job file\n"),
        (lambda d: None, "missing.toml", "missing.toml: no such file\n"),
        (
            lambda d: (d / "file").write_text(""),
            "file/job.toml",
            "file/job.toml: cannot read: Not a directory\n",
        ),
    ],
)
def test_unusable_paths(setup, arg: str, message: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    setup(tmp_path)
    proc = orchestrate(arg, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, message)


@pytest.mark.parametrize(
    "args",
    [["job.toml", "--concurrency", "0"], ["job.toml", "--deadline", "soon"], [], ["job.toml", "--nope"]],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    proc = orchestrate(*args, cwd=tmp_path)
    assert proc.returncode == 2 and "usage: orchestrate" in proc.stderr


def test_help_lists_every_option_and_exit_codes(tmp_path: Path) -> None:
    proc = orchestrate("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for option in ("--concurrency", "--backend", "--log", "--quiet", "--json", "--deadline", "exit codes"):
        assert option in proc.stdout


def test_log_path_that_cannot_be_opened_is_exit_2(tmp_path: Path) -> None:
    job = tmp_path / "tiny.toml"
    job.write_text('[[jobs]]\nprompt = "hi"\n')
    (tmp_path / "blocker").write_text("")
    proc = orchestrate(str(job), "--log", str(tmp_path / "blocker" / "x.jsonl"), cwd=tmp_path)
    assert proc.returncode == 2 and "cannot open log" in proc.stderr and "Traceback" not in proc.stderr


def test_a_small_batch_prints_its_answers(tmp_path: Path) -> None:
    proc = orchestrate(str(ROOT / "jobs" / "sim.toml"), "--no-log", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    answers = proc.stdout.split("batch summary")[0]
    assert "answers" in answers
    for job in ("colors", "haiku", "tools"):
        assert job in answers


def test_a_data_file_runs_without_a_job_file(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    proc = orchestrate(
        "rows.jsonl", "--prompt-template", "Classify: {text}", "-b", "sim", "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["succeeded"] == 2
    assert len(list((tmp_path / "runs").glob("rows-*.jsonl"))) == 1


def test_prompts_on_stdin(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "-", "--no-log", "--json"],
        input="one\ntwo\nthree\n",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["succeeded"] == 3


def test_template_flags_are_refused_with_a_job_file(tmp_path: Path) -> None:
    proc = orchestrate(str(ROOT / "jobs" / "sim.toml"), "-m", "x", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "--model: for a data file or stdin; a job file sets these in [defaults]\n"


def test_dry_run_checks_and_estimates_without_running(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("id,text\na,one\nb,two\n")
    args = ("rows.csv", "--prompt-template", "Say {text}", "--id-column", "id", "--dry-run")
    proc = orchestrate(*args, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = orjson.loads(proc.stdout)
    assert plan["jobs"] == 2 and plan["groups"][0]["backend"] == "sim"
    assert plan["samples"][1]["messages"] == [{"role": "user", "content": "Say two"}]
    text = orchestrate(*args, cwd=tmp_path).stdout
    assert text.startswith("dry run: 2 jobs; nothing was sent\n") and "  user: Say one" in text
    assert not (tmp_path / "runs").exists()
    bad = orchestrate("rows.csv", "--prompt-template", "{nope}", "--dry-run", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("rows.csv: row 1: column 'nope' is missing")


def test_a_dry_run_of_a_resume_covers_only_what_the_resumed_run_would_send(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("id,text\na,one\nb,two\nc,three\n")
    args = ("rows.csv", "--prompt-template", "Say {text}", "--id-column", "id")
    first = orchestrate(*args, "--log", "run.jsonl", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "run.jsonl").read_bytes()
    # One row changed and one added: those two are what a resume would send.
    (tmp_path / "rows.csv").write_text("id,text\na,one\nb,TWO\nc,three\nd,four\n")
    proc = orchestrate(*args, "--resume", "run.jsonl", "--dry-run", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = orjson.loads(proc.stdout)
    assert (plan["jobs"], plan["already_done"]) == (2, 2)
    assert [s["messages"][0]["content"] for s in plan["samples"]] == ["Say TWO", "Say four"]
    text = orchestrate(*args, "--resume", "run.jsonl", "--dry-run", cwd=tmp_path).stdout
    assert text.startswith("dry run: 2 jobs; nothing was sent\n2 jobs the log shows done are left out")
    assert (tmp_path / "run.jsonl").read_bytes() == before  # read, not written


def test_the_reviews_example_runs_on_sim_and_keeps_each_rows_gold_label(tmp_path: Path) -> None:
    from orchestrator.events import JobInput

    log = tmp_path / "reviews.jsonl"
    proc = orchestrate(
        str(ROOT / "jobs" / "reviews.toml"), "-b", "sim", "--log", str(log), "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["succeeded"] == 12
    inputs = {
        r.tagged.job_id: r.tagged.event
        for r in read_log(log)
        if r.tagged and isinstance(r.tagged.event, JobInput)
    }
    assert inputs["r02"].row == {"review_id": "r02", "label": "negative"}
    assert inputs["r02"].prompt == "Review: Broke after two days. Waste of money.\nLabel:"


def test_a_data_file_run_resumes_from_its_own_log_and_so_does_stdin(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("id,text,label\na,one,x\nb,two,y\n")
    args = ("rows.csv", "--prompt-template", "Say {text}", "--id-column", "id", "--json")
    assert orchestrate(*args, cwd=tmp_path).returncode == 0
    (tmp_path / "rows.csv").write_text("id,text,label\na,one,RELABELLED\nb,two,y\nc,three,z\n")
    again = orchestrate(*args, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    summary = orjson.loads(again.stdout)
    assert (summary["already_done"], summary["jobs"]) == (2, 1)  # a new label is not a new request
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    for expected_done in (0, 2):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", "-", "--json", *(["--resume"] if expected_done else [])],
            input="one\ntwo\n",
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert orjson.loads(proc.stdout)["already_done"] == expected_done
