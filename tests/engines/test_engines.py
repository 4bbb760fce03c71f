"""Choosing an engine: by name, with the address only the Ray engine takes."""

from __future__ import annotations

import pytest

from orchestrator.api import open_batch
from orchestrator.engines import LocalEngine, engine_named
from orchestrator.errors import ConfigError


def test_the_local_engine_is_chosen_by_name() -> None:
    assert isinstance(engine_named("local"), LocalEngine)


@pytest.mark.parametrize(
    ("name", "address", "says"),
    [
        ("local", "auto", "--address: only with --engine ray"),
        ("dask", None, "engine 'dask': unknown; one of local, ray"),
    ],
)
def test_an_engine_it_cannot_use_is_a_config_error(name: str, address: str | None, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        engine_named(name, address)
    assert caught.value.problems == [says]


async def test_open_batch_runs_on_the_local_engine_only() -> None:
    with pytest.raises(ConfigError, match=r"open_batch\(engine=\.\.\.\)"):
        async with open_batch(["hi"], backend="sim", engine="ray"):
            pass
