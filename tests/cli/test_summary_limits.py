"""The end-of-run summary says when a backend's own in-flight limit held the batch back."""

from __future__ import annotations

import io
from pathlib import Path

import trio

from orchestrator.cli.display import Progress, print_summary
from orchestrator.events import BatchSummary, LimiterChanged, Tagged, Tokens
from tests.cli.test_cli import orchestrate


def summary() -> BatchSummary:
    return BatchSummary(
        jobs=10,
        succeeded=10,
        failed=0,
        cancelled=0,
        skipped=0,
        attempts=10,
        retries=0,
        tokens=Tokens(),
        cost_usd=0.0,
        wall_s=1.0,
    )


def changes(*values: tuple[str, float]) -> Progress:
    progress = Progress()
    events = [
        Tagged(None, None, i, float(i), LimiterChanged(backend, "concurrency", value, None, "why"))
        for i, (backend, value) in enumerate(values)
    ]
    trio.run(progress.deliver, events)
    return progress


def test_a_backend_held_below_the_batch_concurrency_all_run_is_in_the_summary() -> None:
    progress = changes(("openai", 64), ("openai", 32), ("anthropic", 64), ("anthropic", 200), ("*", 10))
    assert progress.held_back(200) == {"openai": 64}  # anthropic's derived limit rose to 200
    out = io.StringIO()
    print_summary(summary(), [], stream=out, log=None, held_back=progress.held_back(200), concurrency=200)
    text = " ".join(out.getvalue().replace("│", " ").split())  # the table wraps long cells
    assert "openai ran at most 64 attempts at once, fewer than the batch's concurrency 200" in text
    assert "anthropic ran" not in text


def test_nothing_is_said_when_no_backend_held_the_batch_back() -> None:
    out = io.StringIO()
    print_summary(summary(), [], stream=out, log=None, held_back=changes().held_back(64), concurrency=64)
    assert "in flight" not in out.getvalue()


def test_the_command_and_report_say_which_backend_held_the_batch_back(tmp_path: Path) -> None:
    job = tmp_path / "held.toml"
    job.write_text(
        "[defaults]\nconcurrency = 8\n[defaults.sim]\nttft = 0\n[backends.sim]\nconcurrency = 2\n"
        + "".join(f'[[jobs]]\nprompt = "q{i}"\n' for i in range(6))
    )
    log = tmp_path / "held.jsonl"
    said = "sim ran at most 2 attempts at once, fewer than the batch's concurrency 8"
    run = orchestrate(str(job), "--log", str(log), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert said in " ".join(run.stdout.replace("│", " ").split())
    report = orchestrate("report", str(log), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert said in " ".join(report.stdout.replace("│", " ").split())
