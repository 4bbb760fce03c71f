"""Finding the Claude Code CLI and checking its version, before a batch starts.

Where it is looked for: the ``cli`` setting (a path, or a name on ``PATH``); when that is the
default name and nothing on ``PATH`` has it, the binary the Python ``claude-agent-sdk`` package
bundles (``claude_agent_sdk/_bundled/claude``), so ``pip install claude-agent-sdk`` is enough,
without Node or npm.

Which versions: the output of its stream-json mode changes between releases, and the decoder is
tested against the versions in :data:`TESTED_VERSIONS`; one older than the oldest of them is
refused at preflight, with the command that installs a newer one.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

DEFAULT_CLI = "claude"
PINNED_VERSION = (2, 1, 332)
"""The version ``scripts/install-claude-code`` installs and the recorded transcripts come from."""
TESTED_VERSIONS = ((2, 1, 200), PINNED_VERSION)
"""The versions the end-to-end tests run; the oldest is the oldest accepted."""
OLDEST_VERSION = min(TESTED_VERSIONS)
INSTALL_HINT = "install it with `npm install -g @anthropic-ai/claude-code` (or scripts/install-claude-code)"
UPDATE_COMMAND = "npm install -g @anthropic-ai/claude-code@latest"
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_VERSION_TIMEOUT = 30.0  # a cold start of the native binary on a busy machine takes seconds


def bundled_cli() -> str | None:
    """The CLI inside an installed ``claude-agent-sdk`` package, if there is one. The package is
    located, not imported."""
    try:
        spec = importlib.util.find_spec("claude_agent_sdk")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for name in ("claude", "claude.exe"):
            path = Path(folder, "_bundled", name)
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


def resolve_cli(cli: str) -> str | None:
    """The absolute path of the CLI, or None when it cannot be found or run. Absolute because
    each job may run in a different working directory. The default name falls back to the
    ``claude-agent-sdk`` package's bundled CLI."""
    found = shutil.which(cli)
    if found is None and cli == DEFAULT_CLI:
        found = bundled_cli()
    return os.path.abspath(found) if found is not None else None


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The version ``claude --version`` prints (``"2.1.332 (Claude Code)"``), or None."""
    found = _VERSION.search(text)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


@functools.cache
def _read_version(path: str, mtime_ns: int) -> tuple[int, int, int] | None:
    try:
        done = subprocess.run(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return parse_version(done.stdout.decode("utf-8", "replace"))


def cli_version(path: str) -> tuple[int, int, int] | None:
    """The version of the CLI at ``path``; None when it does not say (asked once per binary)."""
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _read_version(path, mtime_ns)


def version_problem(path: str) -> str | None:
    """Why the CLI at ``path`` cannot be used, when it is older than :data:`OLDEST_VERSION`.

    A CLI whose version cannot be read passes: it is tried, and its output decides.
    """
    version = cli_version(path)
    if version is None or version >= OLDEST_VERSION:
        return None
    return (
        f"claude-code: the Claude Code CLI {path!r} is version {_dotted(version)}, older than "
        f"{_dotted(OLDEST_VERSION)}, the oldest this backend is tested with; update it with "
        f"`{UPDATE_COMMAND}` (or scripts/install-claude-code)"
    )


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
