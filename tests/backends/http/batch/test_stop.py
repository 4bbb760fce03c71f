"""A run stopped while its remote batches run: they are left running (the default) or cancelled
(``cancel_remote``), the fake sees the cancel, the log says which, and a resumed run collects
what the cancelled batch finished and sends only the rest again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from orchestrator.api import run_batch_async
from orchestrator.config.jobfile import build_batch
from orchestrator.run.batch import execute
from orchestrator.run.control import RunControl
from orchestrator.testing.anthropic.batches import anthropic_batch_store, open_fake_anthropic_batches
from orchestrator.testing.remote_batches import BatchStore
from tests.backends.http.batch.providers import PROVIDERS

QUERIES = [{"id": f"j{n}", "prompt": f"q{n}"} for n in range(4)]


def layer(backend: str, base_url: str, log: Path, **settings: Any) -> dict[str, Any]:
    return {
        "backend": backend,
        "model": PROVIDERS[backend][0],
        "concurrency": 100,
        "log": str(log),
        "fsync": "never",  # an fsync runs in a thread, which the virtual clock does not wait for
        "retry": {"base_delay": 0.01, "max_delay": 0.05},
        "backends": {
            backend: {"base_url": base_url, "batch_linger": 1.0, "poll_min": 1.0, "poll_max": 8.0, **settings}
        },
    }


async def stopped_at(seconds: float, defaults: dict[str, Any], cancel_remote: bool | None = None) -> None:
    """Run the batch and stop it (as Ctrl-C does) ``seconds`` in."""
    control = RunControl()
    control.cancel_remote = cancel_remote
    async with trio.open_nursery() as nursery:

        async def stop() -> None:
            await trio.sleep(seconds)
            control.cancel("interrupted")

        nursery.start_soon(stop)
        result = await execute(build_batch(QUERIES, defaults), control=control)
        nursery.cancel_scope.cancel()
    assert result.summary.stopped == "interrupted"


def stops_in(log: Path) -> list[tuple[str, str]]:
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    return [(r["remote_id"], r["action"]) for r in records if r.get("kind") == "batch_stopped"]


@pytest.mark.parametrize("backend", PROVIDERS)
async def test_a_stop_leaves_the_remote_batches_running_by_default(
    backend: str, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    _, new_store, open_fake = PROVIDERS[backend]
    store: BatchStore = new_store(600)
    log = tmp_path / "run.jsonl"
    async with open_fake(store) as fake:
        await stopped_at(100, layer(backend, fake.base_url, log))
    assert store.cancels == []
    assert stops_in(log) == [(batch_id, "detach") for batch_id in store.batches]


@pytest.mark.parametrize("backend", PROVIDERS)
async def test_cancel_remote_cancels_them_and_a_resume_collects_what_they_finished(
    backend: str, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    _, new_store, open_fake = PROVIDERS[backend]
    store: BatchStore = new_store(600)  # the 4 requests finish at 151, 301, 451 and 601 s
    log = tmp_path / "run.jsonl"
    async with open_fake(store) as fake:
        await stopped_at(320, layer(backend, fake.base_url, log, cancel_remote=True))
        [batch_id] = store.batches
        assert store.cancels == [batch_id]
        assert stops_in(log) == [(batch_id, "cancel")]
        resumed = await run_batch_async(
            QUERIES, resume=str(log), **_keywords(layer(backend, fake.base_url, log))
        )
    assert {job_id: job.text for job_id, job in resumed.jobs.items()} == {
        f"j{n}": f"Echo: q{n}" for n in range(4)
    }
    # What the cancelled batch finished before the cancel is taken; only the rest is paid again.
    assert store.submissions == {"j0": 1, "j1": 1, "j2": 2, "j3": 2}


async def test_the_stop_can_choose_against_the_setting(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    store = anthropic_batch_store(600)
    log = tmp_path / "run.jsonl"
    async with open_fake_anthropic_batches(store) as fake:
        defaults = layer("anthropic-batch", fake.base_url, log, cancel_remote=True)
        await stopped_at(100, defaults, cancel_remote=False)
    assert store.cancels == [] and [action for _, action in stops_in(log)] == ["detach"]


async def test_a_cancel_the_provider_refuses_leaves_the_batch_and_says_why(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    store = anthropic_batch_store(600)
    log = tmp_path / "run.jsonl"
    async with open_fake_anthropic_batches(store) as fake:
        await stopped_at(
            700, layer("anthropic-batch", fake.base_url, log, cancel_remote=True, poll_min=500, poll_max=1000)
        )
    # The batch ended at 601 s, before the stop; its poll was not due yet, so it still counted as running.
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    [stopped] = [r for r in records if r.get("kind") == "batch_stopped"]
    assert stopped["action"] == "detach" and "has ended" in stopped["note"]


def _keywords(defaults: dict[str, Any]) -> dict[str, Any]:
    """The library keywords for a ``build_batch`` layer."""
    keywords = dict(defaults)
    keywords["backend_settings"] = keywords.pop("backends")
    return keywords
