"""Structured output on the simulator, on the virtual clock: orchestrator/backends/sim/structured.py
and the job life that checks every reply (orchestrator/run/job.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.backends.sim.structured import REPLIES, structured_reply
from orchestrator.cli.report import main as report_main
from orchestrator.events import OutputParsed, RetryScheduled
from orchestrator.output import Invalid, check_reply
from orchestrator.record.aggregate import fold
from orchestrator.spec import OutputSchema
from tests.helpers import Recorder, make_spec, run_virtual

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "population": {"type": "integer", "minimum": 1},
        "kind": {"enum": ["town", "city"]},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2},
    },
    "required": ["city", "population", "kind", "tags"],
    "additionalProperties": False,
    "$defs": {"tag": {"type": "string"}},
}


def run(sim: dict[str, Any], **retry: Any) -> tuple[Any, Recorder]:
    recorder = Recorder()
    spec = make_spec(
        [{"id": "q", "prompt": "Which city?"}],
        output_schema=SCHEMA,
        sim={"ttft": 0.5, "tokens_per_s": 10, **sim},
        retry=retry,
    )
    return run_virtual(spec, subscribers=[recorder]), recorder


@pytest.mark.parametrize("kind", ["valid", "invalid", "not_json"])
def test_the_simulator_replies_as_asked(kind: str) -> None:
    found = check_reply(OutputSchema(SCHEMA), structured_reply(OutputSchema(SCHEMA), kind))
    assert isinstance(found, Invalid) is (kind != "valid")
    if kind == "invalid":
        orjson.loads(structured_reply(OutputSchema(SCHEMA), kind))  # JSON, just not the schema's


def test_a_schema_that_takes_anything_is_failed_only_by_text_that_is_not_json() -> None:
    reply = structured_reply(OutputSchema({}), "invalid")
    assert isinstance(check_reply(OutputSchema({}), reply), Invalid)


def test_a_valid_first_reply_succeeds_with_its_output_in_the_result_and_the_log() -> None:
    result, recorder = run({})
    job = result.jobs["q"]
    assert job.ok and job.attempts == 1
    assert job.output == {"city": "xx", "population": 1, "kind": "town", "tags": ["x", "x"]}
    assert orjson.loads(job.text or "") == job.output
    kinds = recorder.kinds("q")
    assert kinds[-3:] == ["stream_finished", "output_parsed", "job_succeeded"]
    assert fold(recorder.events).results["q"].output == job.output  # the log alone says the same


def test_an_invalid_reply_then_a_valid_one_is_retried_at_once() -> None:
    result, recorder = run({"output": ["invalid", "valid"]})
    job = result.jobs["q"]
    assert job.ok and job.attempts == 2 and job.output is not None
    retries = [t for t in recorder.of_job("q") if isinstance(t.event, RetryScheduled)]
    assert len(retries) == 1 and retries[0].event.error_kind == "invalid_output"
    assert retries[0].event.delay_s == 0.0
    # attempt 2 starts the moment attempt 1 was found invalid: no backoff on the virtual clock
    started = [t.ts for t in recorder.of_job("q") if t.event.kind == "attempt_started"]
    assert started[1] == pytest.approx(retries[0].ts)
    parsed = [t for t in recorder.of_job("q") if isinstance(t.event, OutputParsed)]
    assert [t.attempt for t in parsed] == [2]


def test_always_invalid_fails_the_job_with_the_validators_message() -> None:
    result, _ = run({"output": ["not_json", "invalid", "invalid", "valid"]}, max_invalid_output=2)
    job = result.jobs["q"]
    assert job.status == "failed" and job.attempts == 3 and job.output is None
    assert job.error_kind == "invalid_output"
    assert job.error is not None and job.error.startswith("the reply does not match the schema: ")
    assert result.summary.failures == {"invalid_output": 1}


def test_no_invalid_output_retries_when_the_budget_is_zero() -> None:
    result, _ = run({"output": ["invalid"]}, max_invalid_output=0)
    assert result.jobs["q"].status == "failed" and result.jobs["q"].attempts == 1


def test_invalid_output_retries_come_on_top_of_the_attempts_for_other_failures() -> None:
    result, _ = run(
        {"output": ["invalid", "invalid", "valid"], "faults": ["ok", "ok", "server_error"]},
        max_attempts=2,
        max_invalid_output=2,
        base_delay=0,
    )
    assert result.jobs["q"].ok and result.jobs["q"].attempts == 4


def test_reask_sends_the_bad_reply_and_the_error_with_the_next_attempt(monkeypatch: Any) -> None:
    from orchestrator.backends.sim import backend as sim

    seen: list[Any] = []
    plan = sim.plan_attempt

    def recording(job: Any, options: Any, attempt: int, seed: int) -> Any:
        seen.append(job)
        return plan(job, options, attempt, seed)

    monkeypatch.setattr(sim, "plan_attempt", recording)
    result, _ = run({"output": ["not_json", "valid"]}, reask=True)
    assert result.jobs["q"].ok
    first, second = seen
    assert first.prompt == "Which city?" and first.messages == ()
    roles = [(m.role, m.content[:40]) for m in second.messages]
    assert roles == [
        ("user", "Which city?"),
        ("assistant", "Sure! Here is the answer you asked for."),
        ("user", "Your reply was not accepted: the reply i"),
    ]
    assert "not JSON" in second.messages[-1].content and second.prompt == ""


def test_report_job_prints_the_parsed_output_from_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "run.jsonl"
    spec = make_spec(
        [{"id": "q", "prompt": "Which city?"}],
        output_schema=SCHEMA,
        sim={"ttft": 0.1, "tokens_per_s": 0, "output": ["invalid"]},
        log=str(log),
    )
    run_virtual(spec)
    assert report_main([str(log), "--job", "q"]) == 0
    out = capsys.readouterr().out
    assert "attempt 1 failed: invalid_output: the reply does not match the schema" in out
    assert 'output: {"city":"xx","population":1,"kind":"town","tags":["x","x"]}' in out


def test_the_example_job_file_runs_on_the_simulator_with_its_retry(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", str(root / "jobs" / "structured.toml"), "-b", "sim", "--json"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["succeeded"] == 2 and summary["retries"] == 1


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(st.sampled_from(REPLIES), max_size=5), budget=st.integers(0, 3))
def test_a_job_succeeds_exactly_when_a_valid_reply_comes_within_its_budget(
    kinds: list[str], budget: int
) -> None:
    result, _ = run({"output": kinds}, max_invalid_output=budget, max_attempts=1)
    job = result.jobs["q"]
    first_valid = (*kinds, "valid").index("valid")  # attempts past the list reply valid
    if first_valid <= budget:
        assert job.ok and job.attempts == first_valid + 1 and job.output is not None
    else:
        assert job.status == "failed" and job.error_kind == "invalid_output"
        assert job.attempts == budget + 1 and job.output is None
