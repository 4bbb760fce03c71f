"""Resume plans from logs: hashes written by earlier versions still match, the plan streams."""

from __future__ import annotations

from pathlib import Path

import orjson

from orchestrator.config.jobfile import build_batch
from orchestrator.record.resume import plan
from orchestrator.spec import BatchSpec

# Content hashes as the previous version wrote them into its logs, for the jobs of ``batch()``.
EARLIER_HASHES = {"p-d45f4f6530": "5f5bc59f85e9ef05", "m": "0dda070e0b720b2f"}


def batch() -> BatchSpec:
    return build_batch(
        [
            "Name three primary colors.",
            {
                "id": "m",
                "prompt": "What is 12*7?",
                "max_tokens": 32,
                "temperature": 0.5,
                "system": "be brief",
            },
        ],
        {"backend": "sim", "model": "sim-1", "sim": {"ttft": 0.2}},
    )


def earlier_log(path: Path, hashes: dict[str, str]) -> Path:
    lines = [
        {
            "kind": "log_header",
            "schema": 1,
            "version": "0.1.0",
            "run_id": "r",
            "started_at": "t",
            "job_file": None,
            "jobs": 2,
            "settings": {},
        }
    ]
    for seq, (job, content_hash) in enumerate(hashes.items()):
        lines.append(
            {
                "job": job,
                "attempt": 0,
                "seq": 0,
                "ts": 0.0,
                "kind": "job_queued",
                "backend": "sim",
                "model": "sim-1",
                "content_hash": content_hash,
            }
        )
        lines.append(
            {"job": job, "attempt": 1, "seq": 1, "ts": 1.0 + seq, "kind": "job_succeeded", "attempts": 1}
        )
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def test_hashes_are_the_ones_earlier_versions_logged() -> None:
    assert {job.id: job.content_hash for job in batch().jobs} == EARLIER_HASHES


def test_a_log_written_by_an_earlier_version_resumes_with_nothing_to_do(tmp_path: Path) -> None:
    planned = plan(batch(), str(earlier_log(tmp_path / "old.jsonl", EARLIER_HASHES)))
    assert planned.already_done == 2 and planned.spec.jobs == ()


def test_an_edited_job_runs_again_and_retry_failed_leaves_it(tmp_path: Path) -> None:
    log = earlier_log(tmp_path / "old.jsonl", {**EARLIER_HASHES, "m": "0000000000000000"})
    planned = plan(batch(), str(log))
    assert planned.already_done == 1 and [job.id for job in planned.spec.jobs] == ["m"]
    assert plan(batch(), str(log), retry_failed=True).spec.jobs == ()


def test_a_plan_over_jobs_made_from_rows_leaves_them_made_from_rows(tmp_path: Path) -> None:
    from orchestrator.config.jobfile import load_job_file

    (tmp_path / "p.jsonl").write_text("".join(f'"question {i}"\n' for i in range(2000)))
    (tmp_path / "big.toml").write_text('prompts_file = "p.jsonl"\n[defaults]\nbackend = "sim"')
    spec = load_job_file(tmp_path / "big.toml")
    done = {job.id: job.content_hash for job in spec.jobs if int(job.prompt.split()[1]) % 3 == 0}
    done[spec.jobs[1].id] = "0000000000000000"  # an edited job runs again
    planned = plan(spec, str(earlier_log(tmp_path / "log.jsonl", done)))
    left = [job for job in spec.jobs if int(job.prompt.split()[1]) % 3 != 0]
    assert planned.already_done == len(done) - 1 and list(planned.spec.jobs) == left
    assert type(planned.spec.jobs.parts[0]).__name__ == "Picked" and planned.spec.jobs.ids()[0] == left[0].id


def test_a_line_whose_kinds_are_not_strings_counts_for_nothing_in_the_plan(tmp_path: Path) -> None:
    # Hand-edited or damaged lines of a job the plan reads: a kind that is a list or an object
    # is no kind the plan looks for (it raised TypeError from the set lookup).
    log = earlier_log(tmp_path / "old.jsonl", EARLIER_HASHES)
    bad = [
        {"job": "m", "ts": 3.0, "kind": ["job_queued"], "content_hash": "x"},
        {"job": "m", "ts": 3.0, "kind": {"job_failed": 1}, "then": [[["job_failed"]], [{"a": 1}, {}]]},
    ]
    with open(log, "ab") as f:
        f.write(b"".join(orjson.dumps(line) + b"\n" for line in bad))
    planned = plan(batch(), str(log))
    assert planned.already_done == 2 and planned.spec.jobs == ()
