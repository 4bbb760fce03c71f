"""One loopback Ray instance per test module (see :mod:`orchestrator.testing.ray`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from orchestrator.testing.ray import loopback_env

pytest.importorskip("ray")
SLOTS = 32


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray instance on 127.0.0.1 (2 CPUs, ``SLOTS`` attempt slots) for the module; yields
    the mark its processes carry in their environment."""
    import ray

    mark = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as env:
        for key, value in loopback_env(tmp_path_factory.mktemp("home"), mark).items():
            env.setenv(key, value)
        ray.init(
            address="local",  # ours, never a cluster someone else runs on this machine
            num_cpus=2,
            resources={"llm_slots": SLOTS},
            object_store_memory=100 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
        try:
            yield mark
        finally:
            ray.shutdown()
