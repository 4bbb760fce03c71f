"""Fixtures and settings shared by the test modules."""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.helpers import Recorder

# Timing belongs in benchmarks: on a shared, busy machine a per-example deadline only makes
# property tests flaky, so none applies.
settings.register_profile("orchestrator", deadline=None)
settings.load_profile("orchestrator")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
