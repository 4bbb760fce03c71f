"""API keys never leave the request header: not in the log, the output, errors or reprs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from orchestrator.backends.http.exchange import ApiKey
from orchestrator.testing.anthropic.server import ErrorMidStream as AnthropicErrorMidStream
from orchestrator.testing.anthropic.server import HttpError as AnthropicHttpError
from orchestrator.testing.anthropic.server import open_fake_anthropic
from orchestrator.testing.openai.server import ErrorMidStream, HttpError, Reply, open_fake_openai

OPENAI_KEY = "sk-proj-SECRET-openai-4f9c2b7d1e"
ANTHROPIC_KEY = "sk-ant-SECRET-anthropic-8a1d3c5e7f"
ROOT = Path(__file__).resolve().parents[3]


def test_an_api_key_hides_itself() -> None:
    key = ApiKey(OPENAI_KEY)
    assert OPENAI_KEY not in repr(key) and OPENAI_KEY not in str(key) and OPENAI_KEY not in f"{key}"
    assert key.redact(f"bad key {OPENAI_KEY}!") == "bad key <redacted>!"


@pytest.mark.slow
async def test_a_cli_run_leaves_no_key_anywhere(tmp_path: Path) -> None:
    async with open_fake_openai() as openai, open_fake_anthropic() as anthropic:
        # Servers that echo the key back, in an error body and inside a stream.
        openai.script(
            HttpError(401, f"Incorrect API key provided: {OPENAI_KEY}"),
            ErrorMidStream(message=f"key {OPENAI_KEY} is throttled"),
            Reply("fine"),
        )
        anthropic.script(
            AnthropicHttpError(400, f"x-api-key {ANTHROPIC_KEY} is not valid for this model"),
            AnthropicErrorMidStream(error_type="invalid_request_error", message=f"bad {ANTHROPIC_KEY}"),
        )
        log = tmp_path / "run.jsonl"
        job_file = tmp_path / "jobs.toml"
        job_file.write_text(
            f"""
[defaults]
concurrency = 1
log = "{log}"
[defaults.retry]
base_delay = 0.01
max_delay = 0.02
[backends.openai]
base_url = "{openai.base_url}"
api_key_env = "MY_OPENAI_KEY"
[backends.anthropic]
base_url = "{anthropic.base_url}"

[[jobs]]
id = "openai-auth"
backend = "openai"
model = "gpt-4o-mini"
prompt = "one"

[[jobs]]
id = "openai-retried"
backend = "openai"
model = "gpt-4o-mini"
prompt = "two"

[[jobs]]
id = "anthropic-bad"
backend = "anthropic"
model = "claude-haiku-4-5"
prompt = "three"

[[jobs]]
id = "anthropic-stream-error"
backend = "anthropic"
model = "claude-haiku-4-5"
prompt = "four"
"""
        )
        env = {**os.environ, "MY_OPENAI_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
        env["PYTHONPATH"] = str(ROOT)
        done = await trio.run_process(
            [sys.executable, "-m", "orchestrator", str(job_file)],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = done.stdout.decode() + done.stderr.decode()
    logged = log.read_text()
    assert done.returncode == 1, output  # three jobs fail, as scripted
    assert "Incorrect API key provided: <redacted>" in logged and "<redacted> is throttled" in logged
    assert "openai-retried" in logged and "job_succeeded" in logged
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        assert key not in output
        assert key not in logged
    # The servers did get the keys, where they belong.
    assert openai.requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert anthropic.message_requests()[0].headers["x-api-key"] == ANTHROPIC_KEY


def test_a_missing_key_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    import subprocess

    job_file = tmp_path / "jobs.toml"
    job_file.write_text(
        '[defaults]\nbackend = "anthropic"\nmodel = "claude-haiku-4-5"\n[[jobs]]\nprompt = "hi"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--no-log", str(job_file)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "environment variable ANTHROPIC_API_KEY is not set" in done.stdout + done.stderr
