"""A create call that loses its connection after the provider made the batch: the batch is found
(OpenAI: by its metadata; Anthropic: by its time and size) and adopted, never paid twice."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from orchestrator.backends.http.batch.collector import (
    Chunking,
    Collector,
    CreateInDoubt,
    Outcome,
    Polling,
    Progress,
)
from orchestrator.errors import ErrorKind
from orchestrator.events import BatchSubmitted
from orchestrator.testing.anthropic.batches import anthropic_batch_store, open_fake_anthropic_batches
from tests.backends.http.batch.providers import PROVIDERS
from tests.http_helpers import events_of, run_jobs


@pytest.mark.parametrize("backend", PROVIDERS)
async def test_a_batch_made_by_a_create_call_that_lost_its_answer_is_adopted(
    backend: str, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    model, new_store, open_fake = PROVIDERS[backend]
    store = new_store(30)
    store.drop_creates = 1
    log = tmp_path / "run.jsonl"
    jobs = [{"id": f"j{n}", "prompt": f"q{n}"} for n in range(3)]
    async with open_fake(store) as fake:
        settings = {"base_url": fake.base_url, "batch_linger": 1.0, "poll_min": 1.0, "poll_max": 8.0}
        result, _ = await run_jobs(backend, settings, jobs, model=model, concurrency=100, log=str(log))
    assert {job_id: job.text for job_id, job in result.jobs.items()} == {
        f"j{n}": f"Echo: q{n}" for n in range(3)
    }
    assert store.submissions == {"j0": 1, "j1": 1, "j2": 1} and len(store.batches) == 1
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    [submitted] = [r for r in records if r.get("kind") == "batch_submitted"]
    assert submitted["remote_id"] in store.batches
    assert (
        "the create call failed (connection" in submitted["note"] and "found the batch" in submitted["note"]
    )


@pytest.mark.parametrize("backend", PROVIDERS)
async def test_a_create_call_that_never_answers_times_out_and_its_batch_is_adopted(
    backend: str, autojump_clock: trio.abc.Clock
) -> None:
    model, new_store, open_fake = PROVIDERS[backend]
    store = new_store(30)
    store.hang_creates = 1
    jobs = [{"id": f"j{n}", "prompt": f"q{n}"} for n in range(3)]
    async with open_fake(store) as fake:
        settings = {"base_url": fake.base_url, "batch_linger": 1.0, "poll_min": 1.0, "control_timeout": 20.0}
        start = trio.current_time()
        result, recorder = await run_jobs(backend, settings, jobs, model=model, concurrency=100)
    assert result.summary.succeeded == 3
    assert store.submissions == {"j0": 1, "j1": 1, "j2": 1} and len(store.batches) == 1
    [submitted] = events_of(recorder, BatchSubmitted)
    assert "the create call failed (timeout" in submitted.note and "20s (control_timeout)" in submitted.note
    assert trio.current_time() - start < 20 + 30 + 60  # the timeout, the processing, a few polls


async def test_a_second_batch_of_the_same_size_is_not_mistaken_for_the_lost_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = anthropic_batch_store(30)
    async with open_fake_anthropic_batches(store) as fake:
        settings = {"base_url": fake.base_url, "batch_linger": 1.0, "poll_min": 1.0, "batch_requests": 1}
        store.drop_creates = 1  # the first chunk's answer is lost; the second's arrives
        jobs = [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}]
        result, _ = await run_jobs(
            "anthropic-batch", settings, jobs, model="claude-sonnet-4-5", concurrency=10
        )
    assert result.jobs["a"].text == "Echo: x" and result.jobs["b"].text == "Echo: y"
    assert store.submissions == {"a": 1, "b": 1}


class LostCreate:
    """A provider whose every create call is in doubt and whose list finds ``found``."""

    def __init__(self, found: str | None) -> None:
        self.found = found
        self.creates = 0
        self.looked: list[tuple[int, Collection[str]]] = []

    def size(self, custom_id: str, body: Mapping[str, Any]) -> int:
        return 10

    async def submit(self, requests: Sequence[tuple[str, Mapping[str, Any]]], label: str) -> str:
        self.creates += 1
        raise CreateInDoubt("the connection dropped", kind=ErrorKind.CONNECTION)

    async def find(self, label: str, count: int, since: float, known: Collection[str]) -> str | None:
        self.looked.append((count, set(known)))
        return self.found

    async def poll(self, batch_id: str) -> Progress:
        return Progress(ended=True)

    async def results(self, batch_id: str) -> list[Outcome]:
        return [Outcome("a", reply={"answer": batch_id})]

    async def cancel(self, batch_id: str) -> None:
        return None


async def ask(remote: LostCreate) -> Outcome:
    collector = Collector(remote, Chunking(10, 10_000, 1.0), Polling(1.0, 8.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.run)
        outcome = await collector.request("a", {})
        nursery.cancel_scope.cancel()
    return outcome


async def test_a_lost_create_whose_batch_is_found_takes_that_batchs_result(
    autojump_clock: trio.abc.Clock,
) -> None:
    remote = LostCreate(found="made")
    outcome = await ask(remote)
    assert outcome.reply == {"answer": "made"} and remote.creates == 1 and remote.looked == [(1, set())]


async def test_a_lost_create_with_no_batch_to_find_fails_the_attempt_to_be_sent_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    remote = LostCreate(found=None)
    outcome = await ask(remote)
    assert isinstance(outcome.error, CreateInDoubt) and outcome.error.kind == ErrorKind.CONNECTION
    assert remote.creates == 1 and len(remote.looked) == 1


async def test_two_lost_creates_at_once_both_look_for_their_batches(autojump_clock: trio.abc.Clock) -> None:
    remote = LostCreate(found=None)
    collector = Collector(remote, Chunking(1, 10_000, 1.0), Polling(1.0, 8.0))
    outcomes: list[Outcome] = []
    with trio.fail_after(60):  # neither waits for the other
        await _both(collector, outcomes)
    assert len(outcomes) == 2 and remote.creates == 2 and len(remote.looked) == 2


async def _both(collector: Collector, outcomes: list[Outcome]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.run)
        async with trio.open_nursery() as askers:
            for cid in ("a", "b"):
                askers.start_soon(lambda cid=cid: _append(outcomes, collector.request(cid, {})))
        nursery.cancel_scope.cancel()


async def _append(outcomes: list[Outcome], waiting: Any) -> None:
    outcomes.append(await waiting)
