"""First-class options of the claude-code backend: resuming sessions, MCP, directories, settings,
fallback model, effort. The flags they become exist in the CLIs the tests cover."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.claude_code.backend import Options, command_line
from orchestrator.backends.claude_code.decode import ClaudeDecoder
from orchestrator.config.jobfile import build_batch
from orchestrator.errors import ConfigError
from orchestrator.events import StreamWarning
from orchestrator.spec import JobSpec
from orchestrator.testing.anthropic.server import Reply, open_fake_anthropic
from tests.backends.claude_code.test_claude_code import events, job, run
from tests.backends.claude_code.test_decode import line, of_type

ALL = Options(
    resume="0b6f3c1e-5f2a-4d7e-9a61-3c2b1d0e9f88",
    fork_session=True,
    mcp_config=("mcp.json", '{"mcpServers": {}}'),
    strict_mcp=True,
    add_dirs=("../shared", "../docs"),
    settings='{"model": "x"}',
    fallback_model="claude-haiku-4-5",
    effort="low",
    allowed_tools=("Read",),
)


def argv(options: Options) -> list[str]:
    return command_line("claude", JobSpec(id="j", prompt="hi", backend="claude-code"), options)


def test_each_option_becomes_its_flag() -> None:
    got = argv(ALL)
    for flag, value in [
        ("--resume", ALL.resume),
        ("--settings", ALL.settings),
        ("--fallback-model", "claude-haiku-4-5"),
        ("--effort", "low"),
    ]:
        assert got[got.index(flag) + 1] == value
    assert "--fork-session" in got and "--strict-mcp-config" in got and "--continue" not in got
    # List flags take every following word up to the next flag: each list comes last, whole.
    mcp = got.index("--mcp-config")
    assert got[mcp + 1 : mcp + 3] == list(ALL.mcp_config) and got[mcp + 3] == "--add-dir"
    assert got[mcp + 4 :] == ["../shared", "../docs"]


def test_continue_session_is_the_continue_flag() -> None:
    assert "--continue" in argv(Options(continue_session=True))
    assert argv(Options()) == ["claude", "-p", "--output-format", "stream-json", "--verbose"]


def flags_of(words: list[str]) -> set[str]:
    return {w for w in words if w.startswith("--")}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["claude_cli", "oldest_cli"])
def test_every_flag_the_backend_writes_is_in_the_clis_help(
    which: str, request: pytest.FixtureRequest
) -> None:
    cli = request.getfixturevalue(which)
    done = subprocess.run(
        [cli, "--help"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    written = flags_of(argv(ALL)) | flags_of(argv(Options(continue_session=True)))
    missing = [flag for flag in sorted(written) if flag not in done.stdout]
    assert missing == []


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"resume": "abc", "continue_session": True}, "continue_session"),
        ({"fork_session": True}, "fork_session"),
        ({"strict_mcp": True}, "strict_mcp"),
        ({"effort": "extreme"}, "effort"),
    ],
)
def test_options_that_make_no_sense_are_refused_naming_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_batch(["hi"], {"backend": "claude-code", "claude-code": options})
    [problem] = raised.value.problems
    assert key in problem


# --- an MCP server that failed to start ---------------------------------------------------------------


def init(*servers: dict[str, str]) -> str:
    return line(type="system", subtype="init", session_id="s", tools=[], model="m", mcp_servers=list(servers))


def test_a_failed_mcp_server_is_a_warning_and_the_attempt_goes_on() -> None:
    decoder = ClaudeDecoder()
    got = decoder.feed(init({"name": "db", "status": "failed"}, {"name": "ok", "status": "connected"}))
    assert [w.message for w in of_type(got, StreamWarning)] == ["MCP server 'db' failed to start"]
    assert decoder.failed_early is None


def test_with_strict_mcp_a_failed_server_fails_the_attempt_at_once_not_retried() -> None:
    decoder = ClaudeDecoder(strict_mcp=True)
    decoder.feed(init({"name": "db", "status": "failed"}))
    error = decoder.failed_early
    assert error is not None and not error.retryable and "'db'" in error.message
    assert decoder.finish(None).error is error


def test_connected_servers_say_nothing() -> None:
    decoder = ClaudeDecoder(strict_mcp=True)
    assert of_type(decoder.feed(init({"name": "ok", "status": "connected"})), StreamWarning) == []
    assert decoder.failed_early is None


# --- the real CLI ------------------------------------------------------------------------------------------


def broken_mcp(tmp_path: Path) -> str:
    config = {"mcpServers": {"broken": {"command": str(tmp_path / "no-such-server")}}}
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.slow
async def test_a_strict_job_fails_when_its_mcp_server_does_not_start(
    claude_cli: str, home: Path, tmp_path: Path
) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Reply.text("never"))
        result, _ = await run(
            fake,
            home,
            claude_cli,
            [job()],
            options={"mcp_config": [broken_mcp(tmp_path)], "strict_mcp": True},
            retry={"max_attempts": 3},
        )
    outcome = result.jobs["j"]
    assert (outcome.status, outcome.attempts) == ("failed", 1)
    assert outcome.error == "MCP server 'broken' failed to start (strict_mcp)"


@pytest.mark.slow
async def test_without_strict_mcp_the_job_runs_with_a_warning(
    claude_cli: str, home: Path, tmp_path: Path
) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Reply.text("Fine."))
        result, recorder = await run(
            fake, home, claude_cli, [job()], options={"mcp_config": [broken_mcp(tmp_path)]}
        )
    assert result.jobs["j"].ok and result.jobs["j"].text == "Fine."
    assert any("broken" in w.message for w in events(recorder, "j", StreamWarning))


@pytest.mark.slow
async def test_a_job_resumes_an_earlier_jobs_session_in_a_fork(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Reply.text("The code word is walnut."), Reply.text("It was walnut."))
        first, _ = await run(fake, home, claude_cli, [job("Remember a code word.")])
        session = first.jobs["j"].session_id
        assert session
        second, _ = await run(
            fake,
            home,
            claude_cli,
            [job("What was the code word?")],
            options={"resume": session, "fork_session": True},
        )
        asked = fake.requests[-1].body
    assert second.jobs["j"].ok
    assert "walnut" in json.dumps(asked["messages"])  # the earlier conversation came along
    assert second.jobs["j"].session_id not in (None, session)  # a fork: a session of its own
