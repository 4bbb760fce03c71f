"""The real Claude Code CLI for the tests that run it, and a clean HOME for each."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.backends.claude_code.backend import QUIET_ENV
from orchestrator.backends.claude_code.cli import OLDEST_VERSION

ROOT = Path(__file__).resolve().parents[3]
# Where scripts/install-claude-code puts the CLIs (CLAUDE_CODE_TOOLS moves them elsewhere).
TOOLS = Path(os.environ.get("CLAUDE_CODE_TOOLS") or ROOT / ".tools")
INSTALLED_CLI = TOOLS / "claude-code" / "node_modules" / ".bin" / "claude"


@pytest.fixture(scope="session")
def claude_cli() -> str:
    """The pinned CLI, installed by scripts/install-claude-code on first use."""
    return str(INSTALLED_CLI) if os.access(INSTALLED_CLI, os.X_OK) else install()


def install(*version: str) -> str:
    """Run scripts/install-claude-code (for ``version``, else the pinned one); the binary's path."""
    if shutil.which("npm") is None:
        pytest.fail(
            "the claude-code tests run the real Claude Code CLI, installed with npm; npm was not found: "
            "install Node.js with npm, then run scripts/install-claude-code",
            pytrace=False,
        )
    done = subprocess.run(
        [ROOT / "scripts" / "install-claude-code", *version], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/install-claude-code failed:\n{done.stderr}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def oldest_cli() -> str:
    """The oldest CLI version the backend accepts, installed beside the pinned one on first use."""
    version = ".".join(map(str, OLDEST_VERSION))
    path = TOOLS / f"claude-code-{version}" / "node_modules" / ".bin" / "claude"
    return str(path) if os.access(path, os.X_OK) else install(version)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME for the CLI, and an environment free of the developer's Claude settings."""
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "CLAUDE")) or name in QUIET_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")  # a key goes in the environment, never in settings
    path = tmp_path / "home"
    path.mkdir()
    return path
