"""Which Claude Code CLIs the backend runs: the tested versions end to end, older ones refused at
preflight, and the binary ``claude-agent-sdk`` bundles found without Node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.backends.claude_code.backend import KIND, Settings
from orchestrator.backends.claude_code.cli import (
    OLDEST_VERSION,
    PINNED_VERSION,
    bundled_cli,
    cli_version,
    parse_version,
    resolve_cli,
)
from orchestrator.events import ToolCall, ToolResult
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec
from orchestrator.testing.anthropic.server import HttpError, Reply, open_fake_anthropic
from tests.backends.claude_code.conftest import ROOT
from tests.backends.claude_code.test_claude_code import echo_tool, events, job, run

pytestmark = pytest.mark.slow


@pytest.fixture(params=["pinned", "oldest"])
def any_cli(request: pytest.FixtureRequest) -> str:
    """Each CLI version the tests cover, the pinned one and the oldest accepted."""
    name = "claude_cli" if request.param == "pinned" else "oldest_cli"
    cli: str = request.getfixturevalue(name)
    return cli


def test_the_tested_versions_are_the_pinned_one_and_the_oldest_accepted(
    claude_cli: str, oldest_cli: str
) -> None:
    assert cli_version(claude_cli) == PINNED_VERSION
    assert cli_version(oldest_cli) == OLDEST_VERSION < PINNED_VERSION


async def test_a_plain_reply_with_usage_and_session(any_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Reply.text("Hello there!"))
        result, _ = await run(fake, home, any_cli, [job()])
    outcome = result.jobs["j"]
    assert outcome.ok and outcome.text == "Hello there!"
    assert outcome.tokens.input > 0 and outcome.cost_usd is not None and outcome.session_id


async def test_a_streamed_reply_with_a_tool_round_trip(any_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(echo_tool(), Reply.text("It printed hi."))
        result, recorder = await run(
            fake,
            home,
            any_cli,
            [job()],
            options={"allowed_tools": ["Bash"], "include_partial_messages": True},
        )
    outcome = result.jobs["j"]
    assert outcome.ok and outcome.text == "I will run it.\n\nIt printed hi."
    [call] = events(recorder, "j", ToolCall)
    [tool_result] = events(recorder, "j", ToolResult)
    assert call.name == "Bash" and tool_result.content.strip() == "hi"


async def test_an_authentication_failure_is_fatal(any_cli: str, home: Path) -> None:
    async with open_fake_anthropic(default=HttpError(401, "invalid x-api-key")) as fake:
        result, _ = await run(fake, home, any_cli, [job()], retry={"max_attempts": 3})
    outcome = result.jobs["j"]
    assert (outcome.status, outcome.error_kind, outcome.attempts) == ("failed", "auth", 1)


# --- refused and found ---------------------------------------------------------------------------------


def test_versions_are_read_from_what_the_cli_prints() -> None:
    assert parse_version("2.1.332 (Claude Code)\n") == (2, 1, 332)
    assert parse_version("claude 10.0.1") == (10, 0, 1)
    assert parse_version("no version here") is None


def versioned_stand_in(tmp_path: Path, version: str) -> str:
    path = tmp_path / "old-claude"
    path.write_text(f'#!{sys.executable}\nprint("{version} (Claude Code)")\n')
    path.chmod(0o755)
    return str(path)


def spec() -> JobSpec:
    return JobSpec(id="j", prompt="hi", backend="claude-code")


def test_preflight_refuses_a_cli_older_than_the_oldest_tested(tmp_path: Path) -> None:
    cli = versioned_stand_in(tmp_path, "2.1.199")
    [problem] = KIND.preflight(Settings(cli=cli), Alike.each([spec()]))
    assert "2.1.199" in problem and "2.1.200" in problem
    assert "npm install -g @anthropic-ai/claude-code@latest" in problem
    assert "\n" not in problem


def test_preflight_accepts_the_oldest_tested_and_newer(tmp_path: Path) -> None:
    for version in ("2.1.200", "2.2.0", "3.0.0"):
        folder = tmp_path / version
        folder.mkdir()
        assert KIND.preflight(Settings(cli=versioned_stand_in(folder, version)), Alike.each([spec()])) == []


def test_a_cli_that_does_not_say_its_version_is_tried(tmp_path: Path) -> None:
    cli = versioned_stand_in(tmp_path, "")
    assert KIND.preflight(Settings(cli=cli), Alike.each([spec()])) == []


def test_orchestrate_exits_2_naming_the_install_command_for_an_old_cli(tmp_path: Path) -> None:
    cli = versioned_stand_in(tmp_path, "1.0.0")
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        f'[defaults]\nbackend = "claude-code"\n[backends.claude-code]\ncli = "{cli}"\n'
        '[[jobs]]\nid = "a"\nprompt = "hi"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", str(jobs), "--log", str(tmp_path / "log.jsonl")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert "1.0.0" in done.stderr and "npm install -g @anthropic-ai/claude-code@latest" in done.stderr
    assert "Traceback" not in done.stderr


def fake_sdk(root: Path) -> Path:
    """A ``claude_agent_sdk`` package with a bundled CLI, as the wheel lays it out."""
    bundled = root / "claude_agent_sdk" / "_bundled"
    bundled.mkdir(parents=True)
    (root / "claude_agent_sdk" / "__init__.py").write_text("raise ImportError('located, never imported')\n")
    cli = bundled / "claude"
    cli.write_text(f'#!{sys.executable}\nprint("2.1.332 (Claude Code)")\n')
    cli.chmod(0o755)
    return cli


def test_the_sdks_bundled_cli_is_found_when_none_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = fake_sdk(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert bundled_cli() == str(cli)
    assert resolve_cli("claude") == str(cli)
    assert KIND.preflight(Settings(), Alike.each([spec()])) == []


def test_a_cli_on_path_wins_over_the_bundled_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sdk(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    on_path = tmp_path / "bin"
    on_path.mkdir()
    versioned_stand_in(on_path, "2.1.332")
    (on_path / "old-claude").rename(on_path / "claude")
    monkeypatch.setenv("PATH", str(on_path))
    assert resolve_cli("claude") == str(on_path / "claude")


def test_an_explicit_cli_name_is_not_replaced_by_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sdk(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert resolve_cli("claude-nightly") is None
