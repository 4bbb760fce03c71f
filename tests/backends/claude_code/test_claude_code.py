"""The ``claude-code`` backend end to end: the real CLI (pinned, from ``.tools/``) against the fake
Messages API on 127.0.0.1, through :func:`orchestrator.run.batch.execute`. No API key, no network.

Also: the process shell against small stand-in CLIs (stderr floods, a CLI that ignores SIGTERM),
and the pure parts of the shell (command line, environment, preflight).
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

from orchestrator.backends.claude_code.backend import (
    KIND,
    Options,
    Settings,
    command_line,
    environment,
)
from orchestrator.backends.claude_code.process import redact
from orchestrator.config.jobfile import build_batch, load_job_file
from orchestrator.errors import ConfigError
from orchestrator.events import (
    AssistantMessage,
    JobCancelled,
    JobFailed,
    OutputParsed,
    RetryScheduled,
    StreamFinished,
    SystemNotice,
    TextDelta,
    TextRetracted,
    ToolCall,
    ToolResult,
)
from orchestrator.jobs import Alike
from orchestrator.run.batch import BatchResult, execute
from orchestrator.run.control import RunControl
from orchestrator.spec import JobSpec, OutputSchema, RetryPolicy
from orchestrator.testing.anthropic.server import (
    Disconnect,
    ErrorMidStream,
    FakeAnthropic,
    HttpError,
    RecordedRequest,
    Reply,
    Response,
    Stall,
    Text,
    ToolUse,
    demo_reply,
    open_fake_anthropic,
)
from tests.backends.claude_code.conftest import ROOT
from tests.helpers import Recorder

SLEEPER = "python3 -c 'import time; time.sleep(30)'"  # the Bash tool refuses a plain `sleep N`

pytestmark = pytest.mark.slow


async def run(
    fake: FakeAnthropic | None,
    home: Path,
    cli: str,
    jobs: Sequence[str | Mapping[str, Any]],
    *,
    options: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | None = None,
    timeouts: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    control: RunControl | None = None,
    recorder: Recorder | None = None,
    batch: Mapping[str, Any] | None = None,
) -> tuple[BatchResult, Recorder]:
    """Run ``jobs`` on the claude-code backend; the CLI does no retries of its own unless told.
    ``batch``: batch-wide settings (``max_cost_usd``, ``concurrency``, ...)."""
    env = {"HOME": str(home)}
    if fake is not None:
        env["ANTHROPIC_BASE_URL"] = fake.base_url
    defaults = {
        "backend": "claude-code",
        "claude-code": {"max_retries": 0, **(options or {})},
        "retry": {"max_attempts": 1, "base_delay": 0.01, "max_delay": 0.05, **(retry or {})},
        "timeouts": {"attempt": 60, "idle": 60, **(timeouts or {})},
        "backends": {"claude-code": {"cli": cli, "env": env, **(settings or {})}},
        **(batch or {}),
    }
    spec = build_batch(jobs, defaults)
    recorder = recorder or Recorder()
    with trio.fail_after(90):
        result = await execute(spec, subscribers=[recorder], control=control)
    return result, recorder


def events(recorder: Recorder, job_id: str = "j", cls: type | tuple[type, ...] = object) -> list[Any]:
    return [t.event for t in recorder.of_job(job_id) if isinstance(t.event, cls)]


def notices(recorder: Recorder, subtype: str, job_id: str = "j") -> list[Mapping[str, Any]]:
    return [e.data for e in events(recorder, job_id, SystemNotice) if e.subtype == subtype]


def cli_pids(recorder: Recorder) -> list[int]:
    return [
        t.event.data["pid"]
        for t in recorder.events
        if isinstance(t.event, SystemNotice) and t.event.subtype == "process"
    ]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def processes_with_home(home: Path) -> list[int]:
    """Live processes whose environment has this HOME: the CLIs of a test and everything they started."""
    marker = f"HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0") and alive(int(entry)):
                found.append(int(entry))
    return found


async def poll_until(condition: Callable[[], bool]) -> None:
    """Wait for something outside trio's view (processes coming and going)."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.05)


LIMIT = 30.0
"""The attempt limit of the timeout tests: :func:`jump_once` passes it for the attempt that should
time out; any other attempt has this long, however busy the machine."""


async def jump_once(clock: trio.testing.MockClock, ready: Callable[[], object]) -> None:
    """Once ``ready()`` (the attempt that should time out is where it should), jump ``clock``
    past :data:`LIMIT`: that attempt times out then, not after a wall-clock wait that a slow
    start-up might outlast or a slow retry might not."""
    await poll_until(lambda: bool(ready()))
    clock.jump(LIMIT)


def job(prompt: str = "Say hello.", **fields: Any) -> dict[str, Any]:
    return {"id": "j", "prompt": prompt, **fields}


def echo_tool(command: str = "echo hi") -> Reply:
    return Reply((Text("I will run it."), ToolUse("Bash", {"command": command, "description": "Run it"})))


# --- scenarios with the real CLI --------------------------------------------------------------------


async def test_plain_text_streams_the_reply_with_usage_cost_and_session(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Reply.text("Hello there!"))
        result, recorder = await run(fake, home, claude_cli, [job()])
    outcome = result.jobs["j"]
    assert outcome.ok and outcome.text == "Hello there!"
    assert outcome.tokens.input == 10 and outcome.tokens.output > 0
    assert outcome.cost_usd is not None and outcome.cost_usd > 0
    finished = events(recorder, "j", StreamFinished)[0]
    assert outcome.session_id == finished.session_id is not None
    kinds = recorder.kinds("j")
    assert kinds.index("session_started") < kinds.index("text_delta") < kinds.index("stream_finished")
    # Only the Messages endpoint, with the test key: no phoning home.
    assert [(r.method, r.path, r.query, r.stream) for r in fake.requests] == [
        ("POST", "/v1/messages", "beta=true", True)
    ]
    assert fake.requests[0].headers["x-api-key"] == "test"
    assert fake.requests[0].prompt().strip() == "Say hello."


async def test_two_text_blocks_read_as_two_paragraphs(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Reply.text("First block.", "Second block."))
        result, recorder = await run(fake, home, claude_cli, [job()])
    assert result.jobs["j"].text == "First block.\n\nSecond block."
    [message] = events(recorder, "j", AssistantMessage)
    assert [block.text for block in message.content] == ["First block.", "Second block."]


async def test_a_tool_round_trip_runs_bash_in_the_jobs_directory(
    claude_cli: str, home: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    where = str(repo.resolve())
    async with open_fake_anthropic() as fake:
        fake.script(echo_tool("echo hi-from-tool && pwd"), Reply.text("It printed hi."))
        options = {"allowed_tools": ["Bash"], "cwd": str(repo)}
        result, recorder = await run(fake, home, claude_cli, [job("Run it.")], options=options)
    assert result.jobs["j"].ok
    [call] = events(recorder, "j", ToolCall)
    [tool_result] = events(recorder, "j", ToolResult)
    assert (call.name, call.input["command"]) == ("Bash", "echo hi-from-tool && pwd")
    assert tool_result == ToolResult(call.call_id, f"hi-from-tool\n{where}", is_error=False)
    assert result.jobs["j"].text == "I will run it.\n\nIt printed hi."
    assert events(recorder, "j", StreamFinished)[0].turns == 2
    [sent] = fake.requests[1].tool_results()
    assert sent["tool_use_id"] == call.call_id


async def test_max_turns_exceeded_fails_and_is_not_retried(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(echo_tool())
        options = {"max_turns": 1, "allowed_tools": ["Bash"]}
        _, recorder = await run(fake, home, claude_cli, [job()], options=options, retry={"max_attempts": 3})
    [failed] = events(recorder, "j", JobFailed)
    assert (failed.error_kind, failed.retryable, failed.attempts) == ("max_turns", False, 1)
    assert len(fake.requests) == 1
    assert len(events(recorder, "j", ToolResult)) == 1  # the tool ran before the limit hit


async def test_attempts_failing_on_max_turns_cost_what_the_cli_reported(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(echo_tool(), echo_tool())
        options = {"max_turns": 1, "allowed_tools": ["Bash"], "retry_limits": True}
        result, recorder = await run(
            fake, home, claude_cli, [job()], options=options, retry={"max_attempts": 2}
        )
    outcome = result.jobs["j"]
    assert (outcome.status, outcome.error_kind, outcome.attempts) == ("failed", "max_turns", 2)
    costs = [notice["total_cost_usd"] for notice in notices(recorder, "result")]
    assert len(costs) == 2 and all(cost > 0 for cost in costs)
    assert outcome.cost_usd == pytest.approx(sum(costs))


async def test_a_429_with_retry_after_is_waited_out_by_the_cli(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(HttpError(429, "slow down", retry_after=1), Reply.text("After waiting."))
        result, recorder = await run(fake, home, claude_cli, [job()], options={"max_retries": 1})
    assert result.jobs["j"].ok and result.jobs["j"].attempts == 1
    [retry] = notices(recorder, "api_retry")
    assert retry["error_status"] == 429 and retry["retry_delay_ms"] >= 1000
    first, second = fake.requests
    assert second.time - first.time >= 1.0


async def test_a_429_the_cli_gives_up_on_is_retried_by_the_orchestrator(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(HttpError(429, "slow down", retry_after=1), Reply.text("Second attempt."))
        result, recorder = await run(fake, home, claude_cli, [job()], retry={"max_attempts": 2})
    [scheduled] = events(recorder, "j", RetryScheduled)
    assert scheduled.error_kind == "rate_limited"
    # The CLI's own retry delay is not the server's Retry-After: the backend is not paused for it.
    assert scheduled.retry_after_s is None
    assert result.jobs["j"].ok and result.jobs["j"].attempts == 2
    assert result.jobs["j"].text == "Second attempt."


async def test_529_every_time_fails_the_job_after_the_policys_attempts(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic(default=HttpError(529, "Overloaded")) as fake:
        result, recorder = await run(fake, home, claude_cli, [job()], retry={"max_attempts": 3})
    [failed] = events(recorder, "j", JobFailed)
    assert (failed.error_kind, failed.retryable, failed.attempts) == ("overloaded", True, 3)
    assert len(events(recorder, "j", RetryScheduled)) == 2
    assert len(fake.requests) == 3
    assert not result.ok


async def test_an_error_event_mid_stream_falls_back_to_non_streaming(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(ErrorMidStream(partial="partial answer"), Reply.text("Recovered."))
        result, _ = await run(fake, home, claude_cli, [job()])
    assert result.jobs["j"].ok and result.jobs["j"].text == "Recovered."
    assert [r.stream for r in fake.requests] == [True, False]


async def test_a_dropped_connection_mid_stream_is_retried_inside_the_cli(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Disconnect(partial="partial answer"), Reply.text("After the drop."))
        result, recorder = await run(fake, home, claude_cli, [job()], options={"max_retries": 1})
    assert result.jobs["j"].ok and result.jobs["j"].text == "After the drop."
    [retry] = notices(recorder, "api_retry")
    assert retry["error_status"] is None
    assert len(fake.requests) == 2


async def test_a_reply_of_more_than_3_mb_arrives_whole_in_one_line(claude_cli: str, home: Path) -> None:
    text = "ab€ 日本 " * 300_000  # 3.9 MB of UTF-8 with 3-byte characters
    async with open_fake_anthropic() as fake:
        fake.script(Reply((Text(text, chunk_chars=65_536),)))
        result, recorder = await run(fake, home, claude_cli, [job()])
    assert result.jobs["j"].ok
    assert result.jobs["j"].text == text
    [message] = events(recorder, "j", AssistantMessage)
    assert len(message.content[0].text.encode()) >= 3_000_000


async def test_multibyte_utf8_split_across_deltas_and_chunks_is_exact(claude_cli: str, home: Path) -> None:
    pieces = ("Gr", "ü", "ße, 世", "界! 👋", "🏽 e", "\u0301 ", "ok")
    async with open_fake_anthropic() as fake:
        fake.script(Reply((Text("".join(pieces), chunks=pieces),), write_size=3))
        options = {"include_partial_messages": True}
        result, recorder = await run(fake, home, claude_cli, [job()], options=options)
    assert result.jobs["j"].text == "Grüße, 世界! 👋🏽 e\u0301 ok"
    assert len(events(recorder, "j", TextDelta)) == len(pieces)


async def test_401_is_fatal(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic(default=HttpError(401, "invalid x-api-key")) as fake:
        _, recorder = await run(fake, home, claude_cli, [job()], retry={"max_attempts": 3})
    [failed] = events(recorder, "j", JobFailed)
    assert (failed.error_kind, failed.retryable, failed.attempts) == ("auth", False, 1)
    assert "test" not in failed.message.split()  # the key itself is nowhere


async def test_cancelling_a_batch_mid_stream_leaves_no_process(claude_cli: str, home: Path) -> None:
    def respond(request: RecordedRequest) -> Response:
        if "stall" in request.prompt():
            return Stall(partial="Half an ans")
        return echo_tool(SLEEPER)

    control = RunControl()
    recorder = Recorder()
    finished: list[BatchResult] = []
    jobs = [{"id": "stream", "prompt": "Please stall."}, {"id": "tool", "prompt": "Run the sleeper."}]
    options = {"include_partial_messages": True, "allowed_tools": ["Bash"]}
    async with open_fake_anthropic(default=respond) as fake:
        async with trio.open_nursery() as nursery:

            async def batch() -> None:
                result, _ = await run(
                    fake, home, claude_cli, jobs, options=options, control=control, recorder=recorder
                )
                finished.append(result)

            nursery.start_soon(batch)
            with trio.fail_after(30):  # one job mid-stream, the other inside its Bash tool
                await poll_until(
                    lambda: bool(events(recorder, "stream", TextDelta)) and _sleeper_running(home)
                )
            control.cancel("test")
    [result] = finished
    assert {r.job_id: r.status for r in result.jobs.values()} == {"stream": "cancelled", "tool": "cancelled"}
    assert events(recorder, "stream", TextDelta) != []
    assert len(events(recorder, "stream", JobCancelled)) == 1
    pids = cli_pids(recorder)
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)
    assert processes_with_home(home) == []


def _sleeper_running(home: Path) -> bool:
    for pid in processes_with_home(home):
        try:
            if b"time.sleep(30)" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


async def test_an_attempt_timeout_kills_a_stalled_cli_and_retries(
    claude_cli: str, home: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.rate = 1.0  # the wall clock's pace, but for one jump past the stalled attempt's limit
    async with open_fake_anthropic() as fake, trio.open_nursery() as nursery:
        fake.script(Stall(), Reply.text("Second try."))
        nursery.start_soon(jump_once, mock_clock, lambda: len(fake.requests) >= 1)  # stalled
        result, recorder = await run(
            fake, home, claude_cli, [job()], retry={"max_attempts": 2}, timeouts={"attempt": LIMIT}
        )
    [scheduled] = events(recorder, "j", RetryScheduled)
    assert scheduled.error_kind == "timeout_attempt"
    assert result.jobs["j"].ok and result.jobs["j"].attempts == 2
    assert result.jobs["j"].text == "Second try."
    first_pid, second_pid = cli_pids(recorder)
    assert not alive(first_pid) and not alive(second_pid)
    assert processes_with_home(home) == []


async def test_the_job_file_example_runs_against_the_demo_fake(
    claude_cli: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # its working directories are relative to the repository root
    spec = load_job_file(ROOT / "jobs" / "claude.toml")
    async with open_fake_anthropic(default=demo_reply) as fake:
        env = {"HOME": str(home), "ANTHROPIC_BASE_URL": fake.base_url}
        settings = attrs.evolve(spec.backends["claude-code"], cli=claude_cli, env=env)
        spec = attrs.evolve(spec, backends={"claude-code": settings}, log=None)
        with trio.fail_after(90):
            result = await execute(spec)
    assert result.ok, result.jobs
    assert all(r.cost_usd and r.tokens.output for r in result.jobs.values())
    assert result.jobs["backends"].tool_calls[0].input["command"] == "ls"
    assert result.summary.cost_usd > 0


# --- the process shell, with stand-in CLIs -----------------------------------------------------------


def stand_in(tmp_path: Path, body: str) -> str:
    """An executable Python script playing the CLI."""
    path = tmp_path / "fake-claude"
    answer_version = (
        'import sys\nif sys.argv[1:] == ["--version"]:\n    print("2.1.332 (Claude Code)")\n    sys.exit(0)\n'
    )
    path.write_text(f"#!{sys.executable}\n" + answer_version + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


PLAIN = (ROOT / "tests" / "fixtures" / "claude" / "plain_text.jsonl").read_bytes()


async def test_the_prompt_arrives_on_stdin_which_is_then_closed(tmp_path: Path, home: Path) -> None:
    cli = stand_in(
        tmp_path,
        f"""
        import json, os, sys
        prompt = sys.stdin.read()  # hangs unless stdin is closed
        probe = {{"type": "system", "subtype": "probe", "prompt": prompt, "argv": sys.argv[1:],
                  "quiet": os.environ.get("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")}}
        sys.stdout.write(json.dumps(probe) + "\\n")
        sys.stdout.buffer.write({PLAIN!r})
    """,
    )
    result, recorder = await run(None, home, cli, [job("Line one\nLine twö")], options={"max_turns": 3})
    assert result.jobs["j"].ok and result.jobs["j"].text == "Hello there!"
    [probe] = notices(recorder, "probe")
    assert probe["prompt"] == "Line one\nLine twö"
    assert probe["quiet"] == "1"
    assert probe["argv"][:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert "--max-turns" in probe["argv"]


async def test_a_cli_lingering_after_its_result_is_stopped_and_the_job_succeeds(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.backends.claude_code.backend._EOF_GRACE", 0.3)
    cli = stand_in(
        tmp_path,
        f"""
        import sys, time
        sys.stdin.read()
        sys.stdout.buffer.write({PLAIN!r})
        sys.stdout.flush()
        time.sleep(60)  # stdout still open
    """,
    )
    result, recorder = await run(None, home, cli, [job()])
    assert result.jobs["j"].ok and result.jobs["j"].text == "Hello there!"
    [pid] = cli_pids(recorder)
    assert not alive(pid)


async def test_an_exit_without_result_is_a_retryable_error_quoting_stderr(tmp_path: Path, home: Path) -> None:
    cli = stand_in(
        tmp_path,
        """
        import sys
        sys.stdin.read()
        for i in range(200_000):  # 3 MB of stderr: drained as it comes, only the tail kept
            sys.stderr.write(f"noise {i}\\n")
        sys.stderr.write("fatal: out of cheese\\n")
        sys.exit(3)
    """,
    )
    _, recorder = await run(None, home, cli, [job()])
    [failed] = events(recorder, "j", JobFailed)
    assert (failed.error_kind, failed.retryable) == ("process", True)
    assert "exited with code 3 without a result line" in failed.message
    assert failed.message.endswith("fatal: out of cheese")
    assert "noise 0\n" not in failed.message


async def test_a_cli_ignoring_sigterm_is_killed_after_the_grace_period_with_its_tool_sessions(
    tmp_path: Path, home: Path, mock_clock: trio.testing.MockClock
) -> None:
    cli = stand_in(
        tmp_path,
        """
        import json, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stdin.read()
        # Like the CLI's Bash tool: a child in a session of its own.
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        child = subprocess.Popen(sleeper, start_new_session=True)
        print(json.dumps({"type": "system", "subtype": "child", "pid": child.pid}), flush=True)
        time.sleep(3600)
    """,
    )
    # The stand-in never exits by itself: the batch can only end by killing it. The limit is a
    # guard against a hang, not a claim about speed.
    mock_clock.rate = 1.0  # the wall clock's pace, but for one jump past the attempt's limit
    recorder = Recorder()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(jump_once, mock_clock, lambda: notices(recorder, "child"))  # SIGTERM ignored
            await run(
                None,
                home,
                cli,
                [job()],
                timeouts={"attempt": LIMIT},
                settings={"grace_period": 0.5},
                recorder=recorder,
            )
    [failed] = events(recorder, "j", JobFailed)
    assert failed.error_kind == "timeout_attempt"
    [child] = notices(recorder, "child")
    [pid] = cli_pids(recorder)
    assert not alive(pid)
    with trio.fail_after(30):  # the orphaned child is reaped by init, not by us
        await poll_until(lambda: not alive(child["pid"]))


async def test_a_missing_cli_stops_the_batch_before_it_starts(home: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        await run(None, home, "/nonexistent/claude", [job()])
    [problem] = raised.value.problems
    assert "not found" in problem and "npm install -g @anthropic-ai/claude-code" in problem
    assert "\n" not in problem


# --- pure parts ----------------------------------------------------------------------------------------


def spec_of(prompt: str = "hi", **fields: Any) -> JobSpec:
    return JobSpec(id="j", prompt=prompt, backend="claude-code", **fields)


def test_the_command_line_puts_list_flags_last_one_word_per_tool() -> None:
    options = Options(
        max_turns=3,
        allowed_tools=("Bash(git log *)", "Read"),
        disallowed_tools=("Write",),
        permission_mode="acceptEdits",
        append_system_prompt="Be brief.",
        include_partial_messages=True,
        max_budget_usd=0.5,
        extra_args=("--effort", "low"),
    )
    argv = command_line("/bin/claude", spec_of(model="claude-x", system="You are terse."), options)
    assert argv == [
        "/bin/claude", "-p", "--output-format", "stream-json", "--verbose",
        "--model", "claude-x", "--system-prompt", "You are terse.", "--append-system-prompt", "Be brief.",
        "--max-turns", "3", "--permission-mode", "acceptEdits", "--max-budget-usd", "0.5",
        "--include-partial-messages", "--effort", "low",
        "--allowedTools", "Bash(git log *)", "Read", "--disallowedTools", "Write",
    ]  # fmt: skip
    assert "hi" not in argv  # the prompt goes to stdin


def test_no_tools_at_all_is_an_empty_tools_flag() -> None:
    assert command_line("claude", spec_of(), Options(tools=()))[-2:] == ["--tools", ""]


def test_the_environment_layers_and_keeps_a_users_override() -> None:
    settings = Settings(env={"A": "batch", "B": "batch"})
    options = Options(env={"B": "job", "DISABLE_TELEMETRY": "0"}, max_retries=2)
    env = environment({"PATH": "/bin", "A": "inherited"}, settings, options, spec_of(max_tokens=1000))
    assert env["A"] == "batch" and env["B"] == "job" and env["PATH"] == "/bin"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2"
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "1000"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_TELEMETRY"] == "0"


def test_secrets_are_redacted_from_text() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant-abcdefgh123", "SHORT_KEY": "abc", "PATH": "/usr/bin/secretive"}
    text = redact("auth failed for sk-ant-abcdefgh123 with abc in /usr/bin/secretive", env)
    assert text == "auth failed for <redacted> with abc in /usr/bin/secretive"


def test_secrets_in_headers_and_urls_are_redacted_from_text() -> None:
    env = {
        "ANTHROPIC_CUSTOM_HEADERS": "x-team: alpha\nAuthorization: Bearer hdr-secret-0123456789",
        "HTTPS_PROXY": "http://proxyuser:proxy-pass-0123@proxy:3128",
    }
    text = redact("sent hdr-secret-0123456789 via proxyuser:proxy-pass-0123 and proxy-pass-0123", env)
    assert "hdr-secret" not in text and "proxy-pass" not in text


def test_preflight_refuses_header_lists_and_url_credentials_in_env_tables(
    preflight: Callable[..., list[str]],
) -> None:
    problems = preflight(
        env={"ANTHROPIC_CUSTOM_HEADERS": "x-api-key: k", "HTTPS_PROXY": "http://u:secret-pw@proxy:3128"}
    )
    assert len(problems) == 2 and all("looks like a secret" in p for p in problems)
    assert not any("secret-pw" in p for p in problems)


@pytest.fixture
def preflight() -> Iterator[Callable[..., list[str]]]:
    def check(settings: Settings | None = None, **options: Any) -> list[str]:
        settings = settings or Settings(cli=sys.executable)
        return KIND.preflight(settings, Alike.each([spec_of(options=Options(**options))]))

    yield check


def test_preflight_refuses_secrets_in_env_tables(preflight: Callable[..., list[str]]) -> None:
    [problem] = preflight(Settings(cli=sys.executable, env={"ANTHROPIC_API_KEY": "x", "HOME": "/tmp"}))
    assert "ANTHROPIC_API_KEY" in problem and "environment" in problem
    [problem] = preflight(env={"GH_TOKEN": "x", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "10"})
    assert "GH_TOKEN" in problem


def test_preflight_checks_working_directories(preflight: Callable[..., list[str]], tmp_path: Path) -> None:
    assert preflight(cwd=str(tmp_path)) == []
    [problem] = preflight(cwd=str(tmp_path / "missing"))
    assert "is not a directory" in problem


def test_preflight_warns_that_bypass_permissions_is_refused_as_root(
    preflight: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.backends.claude_code.backend._is_root", lambda: True)
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    [problem] = preflight(permission_mode="bypassPermissions")
    assert "IS_SANDBOX=1" in problem
    assert preflight(permission_mode="bypassPermissions", env={"IS_SANDBOX": "1"}) == []


def test_the_backend_has_its_own_default_concurrency() -> None:
    assert KIND.default_concurrency == 4


def test_preflight_refuses_a_key_with_a_control_character_without_quoting_it(
    preflight: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-0123456789\nX-Evil: 1")
    [problem] = preflight()
    assert "ANTHROPIC_API_KEY contains a control character" in problem and "secret-0123" not in problem


# --- structured output -----------------------------------------------------------------------------

COUNT_SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
    "additionalProperties": False,
}


def test_the_schema_goes_to_the_cli_as_its_json_schema_option() -> None:
    argv = command_line("claude", spec_of(output_schema=OutputSchema(COUNT_SCHEMA)), Options())
    at = argv.index("--json-schema")
    assert orjson.loads(argv[at + 1]) == COUNT_SCHEMA


async def test_the_clis_structured_output_is_the_checked_reply(claude_cli: str, home: Path) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Reply((Text("Let me count."), ToolUse("StructuredOutput", {"n": 4}))))
        result, recorder = await run(fake, home, claude_cli, [job("2+2?", output_schema=COUNT_SCHEMA)])
    outcome = result.jobs["j"]
    assert outcome.ok, outcome.error
    assert outcome.output == {"n": 4} and outcome.text == '{"n":4}'
    # the CLI offered the model its structured-output tool; the prose before it was taken back
    assert "StructuredOutput" in [tool["name"] for tool in fake.requests[0].body["tools"]]
    assert [e.chars for e in events(recorder, "j", TextRetracted)] == [len("Let me count.")]
    assert events(recorder, "j", OutputParsed) == [OutputParsed({"n": 4})]


def test_reask_is_refused_before_the_run_since_the_cli_takes_one_turn() -> None:
    spec = spec_of(output_schema=OutputSchema(COUNT_SCHEMA), retry=RetryPolicy(reask=True))
    problems = KIND.preflight(Settings(cli=sys.executable), Alike.each([spec]))
    assert any("retry.reask needs a conversation" in p for p in problems)
