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
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import attrs
import trio

from orchestrator.backends.base import Emit
from orchestrator.backends.claude_code.cli import INSTALL_HINT, resolve_cli, version_problem
from orchestrator.backends.claude_code.decode import ClaudeDecoder
from orchestrator.backends.claude_code.lines import LineSplitter
from orchestrator.backends.claude_code.outcome import Outcome
from orchestrator.backends.claude_code.process import StderrTail, StdoutReader, send_prompt, stop
from orchestrator.backends.claude_code.usage import Price
from orchestrator.backends.http.prices import ANTHROPIC_PRICES, PriceBook
from orchestrator.errors import ErrorKind, FatalError
from orchestrator.events import SystemNotice, Tokens
from orchestrator.jobs import Alike
from orchestrator.output import schema_json
from orchestrator.redact import (
    has_control_characters,
    looks_secret,
    url_credentials,
)
from orchestrator.spec import JobSpec

DEFAULT_CONCURRENCY = 4
"""Each CLI holds about 200 MB resident; 4 keeps a laptop usable. Raise it on a big machine."""
EFFORTS = ("low", "medium", "high", "xhigh", "max")
PERMISSION_MODES = ("default", "acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan")
QUIET_ENV = {
    # The one that matters: with it the CLI talks to ANTHROPIC_BASE_URL and nothing else.
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
}
_EOF_GRACE = 2.0
"""After the CLI has exited (or printed its result), how long stdout may stay silent before we
stop reading: only a stray process that inherited the pipe would keep it open that long."""
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
    resume: str | None = None
    """Resume this session (``--resume``): a session id from an earlier job's result or log."""
    continue_session: bool = False
    """Continue the most recent conversation in the job's directory (``--continue``)."""
    fork_session: bool = False
    """With ``resume``/``continue_session``: continue in a new session, leaving the old one as it
    was (``--fork-session``); without it, jobs resuming one session would all extend it."""
    mcp_config: tuple[str, ...] = ()
    """MCP server configurations, JSON files or JSON strings (``--mcp-config``)."""
    strict_mcp: bool = False
    """Use only the servers of ``mcp_config`` (``--strict-mcp-config``), and fail the attempt when
    one of them fails to start (otherwise that is a warning)."""
    add_dirs: tuple[str, ...] = ()
    """More directories the agent's tools may reach (``--add-dir``)."""
    settings: str | None = None
    """A settings file or JSON string (``--settings``)."""
    fallback_model: str | None = None
    """Models to fall back to when the job's model is overloaded (``--fallback-model``, comma-separated)."""
    effort: str | None = attrs.field(default=None, metadata={"choices": EFFORTS})
    """The model's effort level (``--effort``)."""
    extra_args: tuple[str, ...] = ()
    """More CLI flags, as is (``["--no-session-persistence"]``)."""

    def conflicts(self) -> list[tuple[str | None, str]]:
        """Options that make no sense together (see :func:`orchestrator.config.check.conflicts`)."""
        found: list[tuple[str | None, str]] = []
        if self.resume is not None and self.continue_session:
            found.append(("continue_session", "give resume (a session id) or continue_session, not both"))
        if self.fork_session and self.resume is None and not self.continue_session:
            found.append(("fork_session", "forks the session of resume or continue_session: give one"))
        if self.strict_mcp and not self.mcp_config:
            found.append(("strict_mcp", "uses only the servers of mcp_config: give mcp_config"))
        return found


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
    argv += session_args(options)
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
    argv += list_args(options)
    return argv


def session_args(options: Options) -> list[str]:
    """The flags of the session options: resuming, settings, models, effort, MCP strictness."""
    argv: list[str] = []
    if options.resume is not None:
        argv += ["--resume", options.resume]
    if options.continue_session:
        argv.append("--continue")
    if options.fork_session:
        argv.append("--fork-session")
    if options.settings is not None:
        argv += ["--settings", options.settings]
    if options.fallback_model is not None:
        argv += ["--fallback-model", options.fallback_model]
    if options.effort is not None:
        argv += ["--effort", options.effort]
    if options.strict_mcp:
        argv.append("--strict-mcp-config")
    return argv


def list_args(options: Options) -> list[str]:
    """The list-valued flags of the MCP and directory options (last, like the tool lists)."""
    argv: list[str] = []
    if options.mcp_config:
        argv += ["--mcp-config", *options.mcp_config]
    if options.add_dirs:
        argv += ["--add-dir", *options.add_dirs]
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


def message_price() -> Price:
    """Prices the usage the CLI reports message by message (an estimate the spend cap counts
    for an attempt cut short; the CLI's own ``total_cost_usd`` is the cost once it states one)."""
    book = PriceBook("anthropic", ANTHROPIC_PRICES)

    def price(model: str | None, tokens: Tokens) -> float | None:
        return book.cost(model, tokens)[0]

    return price


class ClaudeCodeBackend:
    """Runs one CLI per attempt. Cancellation-safe: when the attempt's scope is cancelled, the
    CLI's group gets SIGTERM, then SIGKILL after ``grace_period``, and the process is reaped and
    its pipes closed before ``Cancelled`` leaves :meth:`stream`; nothing more is emitted."""

    def __init__(self, settings: Settings, cli: str) -> None:
        self.settings = settings
        self.cli = cli
        self.price = message_price()

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
                await stop(process, self.settings.grace_period)
        for event in outcome.events:
            await emit(event)
        if outcome.error is not None:
            raise outcome.error

    async def _run(
        self, process: trio.Process, prompt: str, options: Options, env: Mapping[str, str], emit: Emit
    ) -> Outcome:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        decoder = ClaudeDecoder(
            retry_limits=options.retry_limits, price=self.price, strict_mcp=options.strict_mcp
        )
        lines = LineSplitter()
        stdout = StdoutReader(process.stdout, _EOF_GRACE)
        stderr = StderrTail()

        async def watch_exit() -> None:
            await process.wait()
            stdout.hurry_up()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_prompt, process.stdin, prompt)
            nursery.start_soon(stderr.drain, process.stderr)
            nursery.start_soon(watch_exit)
            while chunk := await stdout.receive():
                for line in lines.feed(chunk):
                    for event in decoder.feed(line):
                        await emit(event)
                    if decoder.result_seen:
                        stdout.hurry_up()
                if decoder.failed_early is not None:
                    break  # the attempt has failed already (a strict MCP server is down): stop the CLI now
            if decoder.failed_early is not None:
                nursery.cancel_scope.cancel()
                return decoder.finish(process.returncode, "")
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


# The name _Kind's methods annotate with (inside its body, Settings is an attribute).
ClaudeCodeSettings: TypeAlias = Settings


class _Kind:
    name = "claude-code"
    Options = Options
    Settings = Settings
    default_concurrency: int | None = DEFAULT_CONCURRENCY
    files_per_attempt = 4  # pipes to the CLI's stdin, stdout and stderr, and its process handle
    memory_per_attempt = 200 * 1024**2  # one CLI process (see orchestrator.engines.ray.slots)

    def preflight(self, settings: ClaudeCodeSettings, jobs: Sequence[Alike]) -> list[str]:
        problems: list[str] = []
        if resolve_cli(settings.cli) is None:
            where = "" if os.sep in settings.cli else " on PATH"
            problems.append(
                f"claude-code: the Claude Code CLI {settings.cli!r} was not found{where}; {INSTALL_HINT}, "
                "or set cli in [backends.claude-code]"
            )
        else:
            problems += _version_problems(settings)
        problems += _secret_problems("backends.claude-code.env", settings.env)
        for name in _KEY_VARIABLES:
            if has_control_characters({**os.environ, **settings.env}.get(name, "")):
                problems.append(
                    f"claude-code: environment variable {name} contains a control character (a newline?); "
                    "set the key alone"
                )
        for job, _ in jobs:
            options = job.options if isinstance(job.options, Options) else Options()
            problems += _secret_problems(f"job {job.id}: claude-code.env", options.env)
            if options.cwd is not None and not os.path.isdir(options.cwd):
                problems.append(f"claude-code: job {job.id}: cwd {options.cwd!r} is not a directory")
            if job.messages:
                problems.append(
                    f"claude-code: job {job.id}: takes a single user turn: give a prompt, not messages"
                )
            # A blank prompt (the CLI refuses it) never loads: see orchestrator.config.sources.blank.
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


def _version_problems(settings: Settings) -> list[str]:
    """A CLI older than the oldest the tests cover is refused (see :mod:`.cli`)."""
    path = resolve_cli(settings.cli)
    problem = version_problem(path) if path is not None else None
    return [problem] if problem is not None else []


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
