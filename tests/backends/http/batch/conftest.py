"""What the batch backends' tests share: keys in the environment for both providers."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both providers' keys set (no test here sends them anywhere but the loopback fakes)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0123456789")
