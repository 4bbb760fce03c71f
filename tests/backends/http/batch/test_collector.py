"""The collector alone, against an in-memory provider, on the virtual clock: when chunks go,
how big they are, and when polls happen."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import trio

from orchestrator.backends.http.batch.collector import Chunking, Collector, Outcome, Polling, Progress
from orchestrator.errors import ErrorKind, FatalError, RetryableError


class Remote:
    """Batches that end after ``polls_to_end`` polls; ``poll_errors`` are raised first."""

    def __init__(self, polls_to_end: int = 1, poll_errors: Sequence[Exception] = ()) -> None:
        self.polls_to_end = polls_to_end
        self.poll_errors = list(poll_errors)
        self.submitted: list[tuple[float, list[str]]] = []
        self.polled: list[float] = []
        self.polls: dict[str, int] = {}

    def size(self, custom_id: str, body: Mapping[str, Any]) -> int:
        return int(body.get("size", 10))

    async def submit(self, requests: Sequence[tuple[str, Mapping[str, Any]]], label: str) -> str:
        self.submitted.append((trio.current_time(), [cid for cid, _ in requests]))
        batch_id = f"b{len(self.submitted)}"
        self.polls[batch_id] = 0
        return batch_id

    async def poll(self, batch_id: str) -> Progress:
        self.polled.append(trio.current_time())
        if self.poll_errors:
            raise self.poll_errors.pop(0)
        self.polls[batch_id] += 1
        return Progress(ended=self.polls[batch_id] >= self.polls_to_end)

    async def results(self, batch_id: str) -> list[Outcome]:
        index = int(batch_id[1:]) - 1
        return [Outcome(cid, reply={"answer": cid}) for cid in self.submitted[index][1]]

    async def find(self, label: str, count: int, since: float, known: Collection[str]) -> str | None:
        return None

    async def cancel(self, batch_id: str) -> None:
        return None


async def ask_all(collector: Collector, bodies: Mapping[str, Mapping[str, Any]]) -> dict[str, Outcome]:
    """Every request at once; their outcomes. The collector runs beside them."""
    outcomes: dict[str, Outcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.run)

        async def ask(cid: str, body: Mapping[str, Any]) -> None:
            outcomes[cid] = await collector.request(cid, body)

        async with trio.open_nursery() as askers:
            for cid, body in bodies.items():
                askers.start_soon(ask, cid, body)
        nursery.cancel_scope.cancel()
    return outcomes


async def test_a_full_chunk_goes_at_once_and_the_rest_after_the_linger(
    autojump_clock: trio.abc.Clock,
) -> None:
    remote = Remote()
    collector = Collector(remote, Chunking(max_requests=3, max_bytes=10**6, linger=5.0), Polling(1.0))
    outcomes = await ask_all(collector, {f"r{n}": {} for n in range(7)})
    assert [(t, len(ids)) for t, ids in remote.submitted] == [(0.0, 3), (0.0, 3), (5.0, 1)]
    assert all(outcome.reply == {"answer": cid} for cid, outcome in outcomes.items())


async def test_a_chunk_stops_before_max_bytes_but_holds_at_least_one_request(
    autojump_clock: trio.abc.Clock,
) -> None:
    remote = Remote()
    collector = Collector(remote, Chunking(max_requests=100, max_bytes=25, linger=1.0), Polling(1.0))
    sizes = {"a": 10, "b": 10, "c": 10, "huge": 99}
    await ask_all(collector, {cid: {"size": size} for cid, size in sizes.items()})
    chunks = [ids for _, ids in remote.submitted]
    assert sorted(cid for ids in chunks for cid in ids) == sorted(sizes)
    assert ["huge"] in chunks and sorted(len(ids) for ids in chunks) == [1, 1, 2]
    assert all(sum(sizes[cid] for cid in ids) <= 25 for ids in chunks if len(ids) > 1)


async def test_polls_back_off_to_poll_max(autojump_clock: trio.abc.Clock) -> None:
    remote = Remote(polls_to_end=6)
    collector = Collector(
        remote, Chunking(1, 10**6, 0.0), Polling(poll_min=2.0, poll_max=5.0, poll_backoff=2.0)
    )
    await ask_all(collector, {"a": {}})
    assert remote.polled == [2.0, 6.0, 11.0, 16.0, 21.0, 26.0]


async def test_a_failed_poll_waits_its_retry_after_and_a_fatal_one_ends_the_chunk(
    autojump_clock: trio.abc.Clock,
) -> None:
    refused = RetryableError("429", kind=ErrorKind.RATE_LIMITED, retry_after=30.0)
    remote = Remote(poll_errors=[RetryableError("down", kind=ErrorKind.CONNECT), refused])
    collector = Collector(
        remote, Chunking(1, 10**6, 0.0), Polling(poll_min=1.0, poll_max=60.0, poll_backoff=2.0)
    )
    (outcome,) = (await ask_all(collector, {"a": {}})).values()
    assert outcome.reply == {"answer": "a"}
    assert remote.polled == [1.0, 3.0, 33.0]

    gone = Remote(poll_errors=[FatalError("no such batch", kind=ErrorKind.NOT_FOUND)])
    collector = Collector(gone, Chunking(1, 10**6, 0.0), Polling(poll_min=1.0))
    (outcome,) = (await ask_all(collector, {"a": {}})).values()
    assert isinstance(outcome.error, FatalError) and outcome.error.kind is ErrorKind.NOT_FOUND


async def test_a_request_cancelled_while_waiting_for_its_chunk_is_not_sent(
    autojump_clock: trio.abc.Clock,
) -> None:
    remote = Remote()
    collector = Collector(remote, Chunking(10, 10**6, linger=5.0), Polling(1.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.run)
        with trio.move_on_after(1.0):
            await collector.request("gone", {})
        assert (await collector.request("kept", {})).reply == {"answer": "kept"}
        nursery.cancel_scope.cancel()
    assert [ids for _, ids in remote.submitted] == [["kept"]]


async def test_a_request_missing_from_the_results_gets_a_retryable_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Forgetful(Remote):
        async def results(self, batch_id: str) -> list[Outcome]:
            return []

    collector = Collector(Forgetful(), Chunking(1, 10**6, 0.0), Polling(1.0))
    (outcome,) = (await ask_all(collector, {"a": {}})).values()
    assert isinstance(outcome.error, RetryableError) and outcome.error.kind is ErrorKind.API_ERROR
