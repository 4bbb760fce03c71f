"""The collector's thresholds while batches run: orchestrator/run/garbage.py."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio

from orchestrator.config.jobfile import build_batch
from orchestrator.run.batch import execute
from orchestrator.run.bus import CallbackSubscriber
from orchestrator.run.garbage import OLDER_GENERATIONS, fewer_full_collections


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(500, 7, 9)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_the_older_thresholds_are_raised_while_a_batch_runs_and_restored_after(
    thresholds: tuple[int, int, int],
) -> None:
    seen: list[tuple[int, int, int]] = []
    spec = build_batch(["a", "b"], {"backend": "sim", "sim": {"ttft": 0, "tokens_per_s": 0}})

    def look(_event: object) -> None:
        if len(seen) < 2:
            seen.append(gc.get_threshold())  # while it runs: at its first event

    async def main() -> None:
        seen.append(gc.get_threshold())  # before
        await execute(spec, subscribers=[CallbackSubscriber(look)])

    trio.run(main)
    assert seen == [(500, 7, 9), (500, OLDER_GENERATIONS, OLDER_GENERATIONS)]
    assert gc.get_threshold() == (500, 7, 9)


def test_overlapping_batches_restore_the_thresholds_when_the_last_ends(
    thresholds: tuple[int, int, int],
) -> None:
    first, second = fewer_full_collections(), fewer_full_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to start ends first
    assert gc.get_threshold() == (500, OLDER_GENERATIONS, OLDER_GENERATIONS)
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (500, 7, 9)


def test_higher_thresholds_set_by_the_host_are_kept(thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(500, 5000, 7)
    with fewer_full_collections():
        assert gc.get_threshold() == (500, 5000, OLDER_GENERATIONS)
    assert gc.get_threshold() == (500, 5000, 7)
