"""Finding the browser for the HTML report tests: strict in CI, a one-line skip elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import chromium


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No browser on PATH, in the usual places or in the environment."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(chromium, "PLACES", ())
    for var in (*chromium.ENV_VARS, "CI"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_environment_variables_name_the_browser(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chrome = _executable(nowhere.parent / "my-chrome")
    monkeypatch.setenv("CHROME", str(chrome))
    assert chromium.require_chromium() == str(chrome)


def test_a_browser_on_path_is_found(nowhere: Path) -> None:
    found = _executable(nowhere / "chromium-browser")
    assert chromium.find_chromium() == str(found)


def test_no_browser_outside_ci_skips_with_the_install_command(nowhere: Path) -> None:
    with pytest.raises(pytest.skip.Exception) as info:
        chromium.require_chromium()
    assert "run `scripts/install-chromium`" in str(info.value)
    assert "\n" not in str(info.value)


def test_no_browser_in_ci_fails(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no chromium found"):
        chromium.require_chromium()
