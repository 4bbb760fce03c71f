"""``claude-code``: each attempt runs the Claude Code CLI, ``claude -p --output-format stream-json
--verbose``, and streams what it prints as events.

This module is the thin I/O shell: it builds the command line and environment (pure
functions), owns the process, and feeds stdout, cut into lines by
:class:`~.lines.LineSplitter`, to :class:`~.decode.ClaudeDecoder`, which turns lines
into events and decides the outcome.

Per attempt: the prompt goes to stdin, which is then closed (the CLI waits for EOF). The CLI
runs in a new session and process group; stdout is read in chunks and cut into lines of any
length (a line can be megabytes); stderr is drained at the same time into a bounded tail, so a
chatty CLI never blocks, and the tail is quoted (secrets redacted) when the CLI ends without a
``result`` line.

Job fields used: ``prompt``; ``model`` → ``--model``; ``system`` → ``--system-prompt`` (this
*replaces* Claude Code's own system prompt; ``append_system_prompt`` adds to it); ``max_tokens``
→ ``CLAUDE_CODE_MAX_OUTPUT_TOKENS``. ``temperature`` and ``seed`` have no CLI equivalent and are
ignored.

Retry ownership: the CLI retries a failed API request itself, inside the session, keeping the
conversation (``CLAUDE_CODE_MAX_RETRIES``, 10 by default, can take minutes; ``max_retries`` sets
it). Our retry restarts the whole job in a fresh session and re-runs its tools. The decoder maps
what the CLI finally reports: transient API failures are retryable, authentication and bad
requests fatal, ``--max-turns``/``--max-budget-usd`` failures not retried unless ``retry_limits``.

Resources: a CLI process takes about 200 MB of memory and real CPU at start-up, so this backend
runs at most :data:`DEFAULT_CONCURRENCY` attempts at once unless ``[backends.claude-code]
concurrency`` says otherwise. ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (and the
auto-updater and telemetry switches) are set unless the environment already sets them.

Secrets: nothing here copies the environment into an event, a log line or an error. ``env``
tables in job files are written to the log with the settings, so preflight refuses names that
look like secrets (``*_API_KEY``, ``*_TOKEN``, ``*_HEADERS``, ...) or hold a URL with credentials
there: export them in the environment of ``orchestrate`` instead, which the CLI inherits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias

import attrs
import trio

from orchestrator.backends.base import Emit
from orchestrator.backends.claude_code.decode import ClaudeDecoder
from orchestrator.backends.claude_code.lines import LineSplitter
from orchestrator.backends.claude_code.outcome import Outcome
from orchestrator.errors import ErrorKind, FatalError
from orchestrator.events import SystemNotice
from orchestrator.output import schema_json
from orchestrator.redact import (
    Redactor,
    environment_secrets,
    has_control_characters,
    looks_secret,
    url_credentials,
)
from orchestrator.spec import JobSpec

DEFAULT_CONCURRENCY = 4
"""Each CLI holds about 200 MB resident; 4 keeps a laptop usable. Raise it on a big machine."""
INSTALL_HINT = "install it with `npm install -g @anthropic-ai/claude-code` (or scripts/install-claude-code)"
PERMISSION_MODES = ("default", "acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan")
QUIET_ENV = {
    # The one that matters: with it the CLI talks to ANTHROPIC_BASE_URL and nothing else.
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
}
_CHUNK = 256 * 1024
_EOF_GRACE = 2.0
"""After the CLI has exited (or printed its result), how long stdout may stay silent before we
stop reading: only a stray process that inherited the pipe would keep it open that long."""
_STDERR_BYTES = 16 * 1024
_STDERR_LINES = 20
_KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


@attrs.frozen
class Options:
    """Per-job options (``[defaults.claude-code]`` or ``claude-code = {...}`` on a job)."""

    max_turns: int | None = attrs.field(default=None, metadata={"min": 1})
    allowed_tools: tuple[str, ...] = ()
    """Tools (or patterns like ``"Bash(git log *)"``) allowed without asking: ``--allowedTools``."""
    disallowed_tools: tuple[str, ...] = ()
    tools: tuple[str, ...] | None = None
    """The built-in tools offered at all (``--tools``); None: the CLI's default set; ``[]``: none."""
    permission_mode: str | None = attrs.field(default=None, metadata={"choices": PERMISSION_MODES})
    """``bypassPermissions`` is refused by the CLI when run as root, unless ``IS_SANDBOX=1``."""
    append_system_prompt: str | None = None
    cwd: str | None = None
    """The job's working directory (the repository it works on); None: the current directory."""
    env: Mapping[str, str] = attrs.field(factory=dict)
    include_partial_messages: bool = False
    """Stream text as it is generated (``--include-partial-messages``) instead of per block."""
    max_retries: int | None = attrs.field(default=None, metadata={"min": 0})
    """The CLI's own retries of a failed API request (``CLAUDE_CODE_MAX_RETRIES``); None: its default, 10."""
    max_budget_usd: float | None = attrs.field(default=None, metadata={"gt": 0})
    retry_limits: bool = False
    """Retry an attempt that hit ``max_turns`` or ``max_budget_usd`` (by default it fails at once)."""
    extra_args: tuple[str, ...] = ()
    """More CLI flags, as is (``["--effort", "low"]``, ``["--no-session-persistence"]``)."""


@attrs.frozen
class Settings:
    """Batch-wide ``[backends.claude-code]`` settings."""

    cli: str = "claude"
    """The CLI: a name looked up on PATH, or a path."""
    concurrency: int | None = attrs.field(default=None, metadata={"min": 1})
    """Attempts running at once; None: :data:`DEFAULT_CONCURRENCY`."""
    grace_period: float = attrs.field(default=5.0, metadata={"min": 0})
    """Seconds between SIGTERM and SIGKILL when an attempt is stopped (the CLI needs about 1.5 s
    to stop a running tool)."""
    env: Mapping[str, str] = attrs.field(factory=dict)
    """Environment for every CLI, over the inherited one (no secrets: this is logged)."""


# --- pure: the command line and the environment ------------------------------------------------------


def command_line(cli: str, job: JobSpec, options: Options) -> list[str]:
    """The argv for one attempt of ``job``; the prompt is not in it (it goes to stdin)."""
    argv = [cli, "-p", "--output-format", "stream-json", "--verbose"]
    if job.model:
        argv += ["--model", job.model]
    if job.system is not None:
        argv += ["--system-prompt", job.system]
    if options.append_system_prompt is not None:
        argv += ["--append-system-prompt", options.append_system_prompt]
    if options.max_turns is not None:
        argv += ["--max-turns", str(options.max_turns)]
    if options.permission_mode is not None:
        argv += ["--permission-mode", options.permission_mode]
    if options.max_budget_usd is not None:
        argv += ["--max-budget-usd", repr(options.max_budget_usd)]
    if options.include_partial_messages:
        argv.append("--include-partial-messages")
    if job.output_schema is not None:  # the CLI's structured output: its result carries the value
        argv += ["--json-schema", schema_json(job.output_schema)]
    argv += options.extra_args
    # List-valued flags take every following word up to the next flag, so they go last, one
    # word per tool: a pattern like "Bash(git log *)" has spaces in it.
    if options.tools is not None:
        argv += ["--tools", *(options.tools or [""])]
    if options.allowed_tools:
        argv += ["--allowedTools", *options.allowed_tools]
    if options.disallowed_tools:
        argv += ["--disallowedTools", *options.disallowed_tools]
    return argv


def environment(
    inherited: Mapping[str, str], settings: Settings, options: Options, job: JobSpec
) -> dict[str, str]:
    """The CLI's environment: inherited, then the batch's and the job's ``env``, then the job's
    settings; the quiet switches of :data:`QUIET_ENV` unless already set."""
    env = {**inherited, **settings.env, **options.env}
    if options.max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(options.max_retries)
    if job.max_tokens is not None:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(job.max_tokens)
    for name, value in QUIET_ENV.items():
        env.setdefault(name, value)
    return env


def redact(text: str, env: Mapping[str, str]) -> str:
    """``text`` with the secrets of ``env`` hidden (see :func:`orchestrator.redact.environment_secrets`)."""
    return Redactor(environment_secrets(env)).text(text)


# --- the process ---------------------------------------------------------------------------------------


class _StderrTail:
    """The last bytes of stderr, however much the CLI writes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = trio.Event()

    async def drain(self, stream: trio.abc.ReceiveStream) -> None:
        try:
            while chunk := await stream.receive_some(_CHUNK):
                self.data += chunk
                if len(self.data) > 2 * _STDERR_BYTES:
                    del self.data[:-_STDERR_BYTES]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.done.set()

    def text(self, env: Mapping[str, str]) -> str:
        """The last non-empty lines, secrets redacted."""
        lines = bytes(self.data[-_STDERR_BYTES:]).decode("utf-8", "replace").splitlines()
        return redact("\n".join([line for line in lines if line.strip()][-_STDERR_LINES:]), env)


class _Stdout:
    """Reads stdout; once told to hurry (the CLI exited or printed its result), a read that waits
    longer than :data:`_EOF_GRACE` counts as the end."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.hurry = False
        self._scope: trio.CancelScope | None = None

    async def receive(self) -> bytes:
        """The next chunk; ``b""`` at the end."""
        # A ReceiveStream may give a bytearray; a pipe gives bytes, which bytes() returns as is.
        while not self.hurry:
            # A cancelled receive_some consumes nothing, so hurry_up() can interrupt it safely.
            with trio.CancelScope() as self._scope:
                return bytes(await self.stream.receive_some(_CHUNK))
            self._scope = None
        with trio.move_on_after(_EOF_GRACE):
            return bytes(await self.stream.receive_some(_CHUNK))
        return b""

    def hurry_up(self) -> None:
        self.hurry = True
        if self._scope is not None:
            self._scope.cancel()


async def _send_prompt(stdin: trio.abc.SendStream, prompt: str) -> None:
    try:
        await stdin.send_all(prompt.encode("utf-8"))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the CLI is gone before reading it: its exit says why
    finally:
        await stdin.aclose()  # EOF: without it the CLI waits for more prompt forever


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendant_groups(pid: int) -> set[int]:
    """Process groups of ``pid``'s descendants outside its own group (Linux ``/proc``; else empty).

    The CLI runs each Bash tool in a session of its own; a SIGKILL to the CLI's group would not
    reach those, and with the CLI dead nothing would stop them.
    """
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return set()
    for entry in entries:
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2:
            children.setdefault(int(fields[1]), []).append((int(entry), int(fields[2])))
    groups: set[int] = set()
    todo = [pid]
    while todo:
        for child, pgid in children.get(todo.pop(), []):
            todo.append(child)
            if pgid != pid:
                groups.add(pgid)
    return groups


async def _stop(process: trio.Process, grace: float) -> None:
    """End the CLI and reap it: SIGTERM to its group, SIGKILL (to it and its tools' groups) after
    ``grace`` seconds. Callers shield it, so it completes even when the attempt was cancelled."""
    if process.returncode is None:
        # Not reaped yet, so the group id cannot have been reused.
        _signal_group(process.pid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        stragglers = _descendant_groups(process.pid)
        _signal_group(process.pid, signal.SIGKILL)
        for pgid in stragglers:
            _signal_group(pgid, signal.SIGKILL)
        await process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()


class ClaudeCodeBackend:
    """Runs one CLI per attempt. Cancellation-safe: when the attempt's scope is cancelled, the
    CLI's group gets SIGTERM, then SIGKILL after ``grace_period``, and the process is reaped and
    its pipes closed before ``Cancelled`` leaves :meth:`stream`; nothing more is emitted."""

    def __init__(self, settings: Settings, cli: str) -> None:
        self.settings = settings
        self.cli = cli

    async def stream(self, job: JobSpec, attempt: int, emit: Emit) -> None:
        options = job.options if isinstance(job.options, Options) else Options()
        env = environment(os.environ, self.settings, options, job)
        cwd = options.cwd
        if cwd is not None and not await trio.Path(cwd).is_dir():
            raise FatalError(f"working directory {cwd!r} does not exist", kind=ErrorKind.CWD)
        try:
            process = await trio.lowlevel.open_process(
                command_line(self.cli, job, options),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,  # its own group: we signal the CLI and its children together
            )
        except OSError as exc:
            message = f"cannot start {self.cli!r}: {exc.strerror or exc}; {INSTALL_HINT}"
            raise FatalError(message, kind=ErrorKind.CLI_MISSING) from None
        try:
            await emit(SystemNotice("process", {"pid": process.pid, "cwd": cwd or os.getcwd()}))
            outcome = await self._run(process, job.prompt, options, env, emit)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process, self.settings.grace_period)
        for event in outcome.events:
            await emit(event)
        if outcome.error is not None:
            raise outcome.error

    async def _run(
        self, process: trio.Process, prompt: str, options: Options, env: Mapping[str, str], emit: Emit
    ) -> Outcome:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        decoder = ClaudeDecoder(retry_limits=options.retry_limits)
        lines = LineSplitter()
        stdout = _Stdout(process.stdout)
        stderr = _StderrTail()

        async def watch_exit() -> None:
            await process.wait()
            stdout.hurry_up()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send_prompt, process.stdin, prompt)
            nursery.start_soon(stderr.drain, process.stderr)
            nursery.start_soon(watch_exit)
            while chunk := await stdout.receive():
                for line in lines.feed(chunk):
                    for event in decoder.feed(line):
                        await emit(event)
                    if decoder.result_seen:
                        stdout.hurry_up()
            for line in lines.finish():
                for event in decoder.feed(line):
                    await emit(event)
            # stdout has ended: the CLI is exiting. One that lingers (after its result, say) is
            # ended by _stop; its exit status does not change an outcome decided by the result.
            with trio.move_on_after(_EOF_GRACE):
                await process.wait()
            if process.returncode is not None:  # its last words on stderr may still be in the pipe
                with trio.move_on_after(_EOF_GRACE):
                    await stderr.done.wait()
            nursery.cancel_scope.cancel()
        return decoder.finish(process.returncode, stderr.text(env))


def resolve_cli(cli: str) -> str | None:
    """The absolute path of the CLI, or None when it cannot be found or run. Absolute because
    each job may run in a different working directory."""
    found = shutil.which(cli)
    return os.path.abspath(found) if found is not None else None


# The name _Kind's methods annotate with (inside its body, Settings is an attribute).
ClaudeCodeSettings: TypeAlias = Settings


class _Kind:
    name = "claude-code"
    Options = Options
    Settings = Settings
    default_concurrency: int | None = DEFAULT_CONCURRENCY
    files_per_attempt = 4  # pipes to the CLI's stdin, stdout and stderr, and its process handle

    def preflight(self, settings: ClaudeCodeSettings, jobs: Sequence[JobSpec]) -> list[str]:
        problems: list[str] = []
        if resolve_cli(settings.cli) is None:
            where = "" if os.sep in settings.cli else " on PATH"
            problems.append(
                f"claude-code: the Claude Code CLI {settings.cli!r} was not found{where}; {INSTALL_HINT}, "
                "or set cli in [backends.claude-code]"
            )
        problems += _secret_problems("backends.claude-code.env", settings.env)
        for name in _KEY_VARIABLES:
            if has_control_characters({**os.environ, **settings.env}.get(name, "")):
                problems.append(
                    f"claude-code: environment variable {name} contains a control character (a newline?); "
                    "set the key alone"
                )
        for job in jobs:
            options = job.options if isinstance(job.options, Options) else Options()
            problems += _secret_problems(f"job {job.id}: claude-code.env", options.env)
            if options.cwd is not None and not os.path.isdir(options.cwd):
                problems.append(f"claude-code: job {job.id}: cwd {options.cwd!r} is not a directory")
            if job.messages:
                problems.append(
                    f"claude-code: job {job.id}: takes a single user turn: give a prompt, not messages"
                )
            elif not job.prompt.strip():
                problems.append(f"claude-code: job {job.id}: the prompt is empty (the CLI refuses it)")
            if job.output_schema is not None and job.retry.reask:
                problems.append(
                    f"claude-code: job {job.id}: retry.reask needs a conversation, and the CLI takes a "
                    "single user turn (the CLI re-asks the model itself when its output misses the schema)"
                )
            if options.permission_mode == "bypassPermissions" and _is_root():
                env = {**os.environ, **settings.env, **options.env}
                if env.get("IS_SANDBOX") != "1":
                    problems.append(
                        f"claude-code: job {job.id}: as root the CLI refuses permission_mode "
                        "bypassPermissions; set IS_SANDBOX=1 in the environment if this machine is a sandbox"
                    )
        return list(dict.fromkeys(problems))  # one line per distinct problem

    @asynccontextmanager
    async def _open(self, settings: ClaudeCodeSettings) -> AsyncIterator[ClaudeCodeBackend]:
        yield ClaudeCodeBackend(settings, resolve_cli(settings.cli) or settings.cli)

    def open(self, settings: ClaudeCodeSettings, *, seed: int) -> Any:
        return self._open(settings)


def _secret_problems(where: str, env: Mapping[str, str]) -> list[str]:
    return [
        f"claude-code: {where}.{name}: looks like a secret, and job files and settings are logged; "
        "export it in the environment of orchestrate instead"
        for name, value in env.items()
        if looks_secret(name) or url_credentials(value)
    ]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


KIND = _Kind()
