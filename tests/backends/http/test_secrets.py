"""API keys never leave the request header: not in the log, the output, errors or reprs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator.backends.http.exchange import ApiKey
from orchestrator.jobs import Alike
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


def _problems(environ: dict[str, str], **settings: Any) -> list[str]:
    from orchestrator.backends.http.openai import Settings
    from orchestrator.backends.http.preflight import check_settings
    from orchestrator.spec import JobSpec

    job = JobSpec(id="j", prompt="hi", backend="openai", model="gpt-4o-mini")
    return check_settings("openai", Settings(**settings), Alike.each([job]), environ)


@pytest.mark.parametrize(
    "key", [f"{OPENAI_KEY}\nX-Evil: 1", f"{OPENAI_KEY[:10]}\r{OPENAI_KEY[10:]}", f"sk-\x00{OPENAI_KEY}"]
)
def test_a_key_with_a_control_character_is_refused_without_quoting_it(key: str) -> None:
    [problem] = _problems({"OPENAI_API_KEY": key})
    assert "OPENAI_API_KEY contains a control character" in problem
    assert OPENAI_KEY[8:] not in problem


def test_a_base_url_with_credentials_or_a_query_is_refused_without_quoting_it() -> None:
    problems = _problems(
        {"OPENAI_API_KEY": OPENAI_KEY}, base_url=f"https://user:{OPENAI_KEY}@api.example/v1?key={OPENAI_KEY}"
    )
    assert len(problems) == 2
    assert "credentials in the URL" in problems[0] and "query string" in problems[1]
    assert not any(OPENAI_KEY in p for p in problems)


@pytest.mark.parametrize(
    "base_url, allow, key, refused",
    [
        ("http://api.example/v1", False, True, True),
        ("http://10.0.0.7:8000/v1", False, True, True),
        ("http://api.example/v1", True, True, False),
        ("http://api.example/v1", False, False, False),  # no key to give away
        ("http://127.0.0.1:8000/v1", False, True, False),
        ("http://localhost:8000/v1", False, True, False),
        ("http://[::1]:8000/v1", False, True, False),
        ("https://api.example/v1", False, True, False),
    ],
)
def test_a_key_over_plain_http_to_another_host_is_refused_unless_allowed(
    base_url: str, allow: bool, key: bool, refused: bool
) -> None:
    environ = {"OPENAI_API_KEY": OPENAI_KEY} if key else {}
    problems = _problems(environ, base_url=base_url, allow_insecure_http=allow, api_key_required=False)
    assert any("would send the API key in clear" in p for p in problems) == refused, problems


def test_plain_http_with_a_key_is_exit_2_and_runs_with_allow_insecure_http(tmp_path: Path) -> None:
    import subprocess

    def run(extra: str) -> subprocess.CompletedProcess[str]:
        job_file = tmp_path / "jobs.toml"
        job_file.write_text(
            '[defaults]\nbackend = "openai"\nmodel = "gpt-4o-mini"\n'
            f'[backends.openai]\nbase_url = "http://192.0.2.1:9/v1"\nconnect_timeout = 0.2\n{extra}'
            '[defaults.retry]\nmax_attempts = 1\n[[jobs]]\nprompt = "hi"\n'
        )
        env = {**os.environ, "OPENAI_API_KEY": OPENAI_KEY, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "--no-log", str(job_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = run("")
    assert refused.returncode == 2, refused.stderr
    assert "plain http:// to 192.0.2.1 would send the API key in clear" in refused.stderr
    assert OPENAI_KEY not in refused.stdout + refused.stderr
    allowed = run("allow_insecure_http = true\n")
    assert allowed.returncode == 1, allowed.stderr  # it ran: the address answers nothing
    assert "in clear" not in allowed.stderr and OPENAI_KEY not in allowed.stdout + allowed.stderr
