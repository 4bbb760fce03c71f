"""What a job sends: its conversation in every backend's request, and the size estimate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.backends.claude_code.backend import KIND as CLAUDE_CODE
from orchestrator.backends.claude_code.backend import Settings as ClaudeSettings
from orchestrator.backends.http import anthropic, openai
from orchestrator.backends.local.backend import Options as LocalOptions
from orchestrator.backends.local.backend import build_request
from orchestrator.backends.request import attempt_estimate, estimated_input_tokens, turns
from orchestrator.config.jobfile import load_job_file
from orchestrator.errors import ConfigError
from orchestrator.events import Message
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec

HISTORY = (Message("user", "Hi, I'm Ann."), Message("assistant", "Hello Ann!"))
TURNS = [{"role": "user", "content": "Hi, I'm Ann."}, {"role": "assistant", "content": "Hello Ann!"}]


def job(prompt: str = "What is my name?", **fields: object) -> JobSpec:
    return JobSpec(id="j", prompt=prompt, backend="openai", model="m", messages=HISTORY, **fields)  # type: ignore[arg-type]


def test_the_prompt_is_the_last_user_turn_and_an_empty_prompt_adds_none() -> None:
    assert turns(job()) == [*TURNS, {"role": "user", "content": "What is my name?"}]
    assert turns(job("")) == TURNS


def test_anthropic_sends_the_conversation_with_the_system_prompt_apart() -> None:
    body = anthropic.request_body(job(system="brief"), anthropic.Options(), anthropic.Settings())
    assert body["messages"] == [*TURNS, {"role": "user", "content": "What is my name?"}]
    assert body["system"] == "brief"


def test_openai_and_local_put_the_system_prompt_first() -> None:
    body = openai.request_body(job(system="brief"), openai.Options(), openai.Settings())
    assert body["messages"] == [
        {"role": "system", "content": "brief"},
        *TURNS,
        {"role": "user", "content": "What is my name?"},
    ]
    local = build_request(job(system="brief"), LocalOptions())
    assert local["messages"] == body["messages"]


def test_the_estimate_counts_every_message() -> None:
    # 12 + 10 + 16 + 5 characters: 43 // 4 + 1
    assert estimated_input_tokens(job(system="brief")) == 11


def test_an_attempt_reserves_the_backends_estimate_or_the_input_and_its_reply_budget() -> None:
    assert attempt_estimate(None, job(max_tokens=50)) == (estimated_input_tokens(job()) + 50, 0.0)
    assert attempt_estimate(None, job()) == (estimated_input_tokens(job()) + 1024, 0.0)
    assert attempt_estimate(lambda spec: (7, None), job()) == (7, 0.0)  # an unknown cost reserves nothing
    assert attempt_estimate(lambda spec: (7, 0.25), job()) == (7, 0.25)


def test_claude_code_refuses_a_conversation_at_preflight() -> None:
    spec = JobSpec(id="j", prompt="", backend="claude-code", messages=HISTORY)
    problems = CLAUDE_CODE.preflight(ClaudeSettings(cli=sys.executable), Alike.each([spec]))
    assert problems == ["claude-code: job j: takes a single user turn: give a prompt, not messages"]


def test_job_files_take_messages_and_the_hash_covers_them(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(
        '[[jobs]]\nmessages = [{role = "user", content = "Hi"}]\n'
        '[[jobs]]\nmessages = [{role = "user", content = "Hey"}]\n'
        '[[jobs]]\nprompt = "Hi"\n'
    )
    a, b, c = load_job_file(path).jobs
    assert a.messages == (Message("user", "Hi"),) and a.prompt == ""
    assert len({a.id, b.id, c.id}) == 3 and len({a.content_hash, b.content_hash, c.content_hash}) == 3


def test_a_conversation_must_end_with_a_user_turn(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(
        '[[jobs]]\nmessages = [{role = "user", content = "Hi"}, {role = "assistant", content = "Yo"}]\n'
        '[[jobs]]\nmessages = [{role = "robot", content = "Hi"}]\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_job_file(path)
    assert exc.value.problems == [
        f"{path}: jobs[0].messages: the conversation must end with a user turn (or give a prompt)",
        f'{path}: jobs[1].messages[0].role: string "robot" is not one of: user, assistant',
    ]


def test_jsonl_rows_with_a_messages_column_are_conversations(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(
        '{"id": "a", "messages": [{"role": "user", "content": "Hi"}]}\n'
        '{"id": "b", "messages": [{"role": "user", "content": "Hi"}], "prompt": "and?"}\n'
    )
    (tmp_path / "jobs.toml").write_text('data_file = "rows.jsonl"\n[defaults]\nid_column = "id"\n')
    a, b = load_job_file(tmp_path / "jobs.toml").jobs
    assert (a.messages, a.prompt) == ((Message("user", "Hi"),), "")
    assert (b.messages, b.prompt) == ((Message("user", "Hi"),), "and?")
