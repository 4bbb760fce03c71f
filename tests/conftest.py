"""Fixtures and settings shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from hypothesis import settings

from tests.helpers import Recorder

# Timing belongs in benchmarks: on a shared, busy machine a per-example deadline only makes
# property tests flaky, so none applies.
settings.register_profile("orchestrator", deadline=None)
settings.load_profile("orchestrator")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(autouse=True)
def _structlog_left_as_found() -> Iterator[None]:
    """A test that configures structlog (``structlog.testing.capture_logs`` does, and leaves it
    marked configured) must not change where later tests' diagnostics go."""
    configured = structlog.is_configured()
    yield
    if not configured and structlog.is_configured():
        structlog.reset_defaults()
