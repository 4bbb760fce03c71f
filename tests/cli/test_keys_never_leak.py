"""Keys never leak: sentinel secrets planted in every path a backend can quote them (server
errors, a message longer than the cut, an error inside the stream, reply text, a warning quoting
non-JSON data cut through the key, unknown lines, tool output, notices, a crash's traceback, a
diagnostics line, the Claude Code CLI's result, stray lines and stderr, env values whose names do
not look secret, URL credentials) and none of them in any output: the log, stdout and stderr of
the run (with -v), ``report`` (table, ``--job``, ``--json``, ``--html``) and ``tail``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from orchestrator.testing.openai.server import ErrorMidStream, HttpError, Reply, open_fake_openai

ROOT = Path(__file__).resolve().parents[2]
HTTP_KEY = "sk-live-SENTINEL-http-0123456789abcdef"  # in LLM_ACCESS: a name that does not look secret
LEAKY_KEY = "lk-SENTINEL-leaky-fedcba9876543210"  # in LEAKY_SOURCE, known only through the kind
CLAUDE_KEY = "sk-ant-SENTINEL-claude-13579bdf02468ace"
HEADER_TOKEN = "SENTINEL-header-token-5a5a5a5a5a"
MIRROR_PASSWORD = "SENTINEL-mirror-pw-77777777"
SENTINELS = (HTTP_KEY, LEAKY_KEY, CLAUDE_KEY, HEADER_TOKEN, MIRROR_PASSWORD)
FRAGMENT = 12

RUN_WITH_LEAKY = (
    "import sys; from orchestrator.backends import register; register('leaky', 'tests.leaky_backend'); "
    "from orchestrator.cli.main import main; sys.exit(main())"
)

FAKE_CLAUDE = r"""
import json, os, sys
key = os.environ["ANTHROPIC_API_KEY"]
sys.stdin.read()
print(f"Error: invalid x-api-key {key}", flush=True)
print(json.dumps({"type": "mystery", "echo": key}), flush=True)
print(json.dumps({"type": "assistant", "session_id": "s", "message": {"id": "m", "role": "assistant",
      "model": "fake", "content": [{"type": "text", "text": f"I was given {key}"}]}}), flush=True)
print(json.dumps({"type": "result", "subtype": "success", "is_error": True, "session_id": "s",
      "num_turns": 1, "total_cost_usd": 0, "result": f"Invalid API key {key} (ANTHROPIC_API_KEY)"}),
      flush=True)
print(f"ANTHROPIC_API_KEY={key} was refused", file=sys.stderr)
sys.exit(1)
"""


def _job_file(tmp_path: Path, base_url: str, cli: Path) -> Path:
    jobs = [("o-auth", "openai"), ("o-long", "openai"), ("o-stream", "openai")]
    jobs += [("ok", "leaky"), ("crash", "leaky"), ("fatal", "leaky"), ("claude", "claude-code")]
    body = "".join(
        f'[[jobs]]\nid = "{job}"\nbackend = "{backend}"\nprompt = "hello {job}"\n' for job, backend in jobs
    )
    path = tmp_path / "jobs.toml"
    path.write_text(
        f"""
[defaults]
concurrency = 1
model = "gpt-4o-mini"
[defaults.retry]
base_delay = 0.01
max_delay = 0.02
[backends.openai]
base_url = "{base_url}"
api_key_env = "LLM_ACCESS"
[backends.claude-code]
cli = "{cli}"

{body}"""
    )
    return path


def _leaks(name: str, text: str) -> list[str]:
    """Every sentinel (or piece of one) found in ``text``."""
    found = []
    for secret in SENTINELS:
        pieces = {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
        if any(piece in text for piece in pieces):
            found.append(f"{name}: {secret}")
    return found


@pytest.mark.slow
async def test_no_planted_key_reaches_any_output(tmp_path: Path) -> None:
    cli = tmp_path / "claude"
    cli.write_text(f"#!{sys.executable}\n{FAKE_CLAUDE}")
    cli.chmod(cli.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "120",
        "LLM_ACCESS": HTTP_KEY,
        "LEAKY_SOURCE": LEAKY_KEY,
        "ANTHROPIC_API_KEY": CLAUDE_KEY,
        "ANTHROPIC_CUSTOM_HEADERS": f"x-team: blue\nAuthorization: Bearer {HEADER_TOKEN}",
        "MIRROR_URL": f"https://mirror:{MIRROR_PASSWORD}@mirror.example/pkg",
    }
    log = tmp_path / "run.jsonl"
    async with open_fake_openai() as openai:
        openai.script(
            HttpError(401, f"Incorrect API key provided: {HTTP_KEY}"),
            HttpError(400, "y" * 570 + HTTP_KEY + " is not allowed"),  # the key across the 600 cut
            ErrorMidStream(message=f"key {HTTP_KEY} is throttled"),
            Reply(chunks=(f"you sent {HTTP_KEY}",)),
        )
        job_file = _job_file(tmp_path, openai.base_url, cli)
        run = await trio.run_process(
            [sys.executable, "-c", RUN_WITH_LEAKY, str(job_file), "--log", str(log), "-v"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
        )
    outputs = {"run stdout": run.stdout.decode(), "run stderr": run.stderr.decode(), "log": log.read_text()}
    assert run.returncode == 1, outputs["run stderr"][-3000:]
    assert "Incorrect API key provided: <redacted>" in outputs["log"]
    assert "crashed holding <redacted>" in outputs["log"]  # the crash is still explained

    def orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    html = tmp_path / "report.html"
    reports = {
        "report": orchestrate("report", str(log)),
        "report --json": orchestrate("report", str(log), "--json"),
        "report --html": orchestrate("report", str(log), "--html", str(html)),
        "tail": orchestrate("tail", str(log)),
    }
    for job in ("o-auth", "o-long", "o-stream", "ok", "crash", "fatal", "claude"):
        reports[f"report --job {job}"] = orchestrate("report", str(log), "--job", job)
    for name, proc in reports.items():
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = proc.stdout, proc.stderr
    outputs["html"] = html.read_text()
    leaks = [leak for name, text in outputs.items() for leak in _leaks(name, text)]
    assert leaks == []
    assert "claude" in outputs["report stdout"] and "<redacted>" in outputs["report --job claude stdout"]
