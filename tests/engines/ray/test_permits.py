"""A shard's side of its backend's desk, against a fake desk (no Ray): permits only for a paced
backend, and what it learns and uses reported in one call."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import trio

from orchestrator.engines.ray.permits import Permits
from orchestrator.errors import ErrorKind
from orchestrator.events import RateLimitInfo, Tokens
from orchestrator.run.job import Failure
from orchestrator.run.limits import Ticket
from orchestrator.run.pacer import Cost


class _Method:
    def __init__(self, desk: FakeDesk, name: str) -> None:
        self.desk, self.name = desk, name

    def remote(self, *args: Any) -> Any:
        self.desk.calls.append((self.name, args))
        answer: Future[Any] = Future()
        answer.set_result(self.desk.answer(self.name, args))
        return type("Ref", (), {"future": lambda _: answer})()


class FakeDesk:
    """Grants every permit asked for; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)

    def answer(self, name: str, args: tuple[Any, ...]) -> Any:
        if name == "grant":
            return [
                Ticket(Cost(tokens, tokens, tokens), 0, model, 0.0, (0, None))
                for tokens, model, _output in args[0]
            ]
        return None


HEADERS = RateLimitInfo(requests_limit=600, requests_remaining=599)


async def test_an_unpaced_backend_asks_for_no_permit_until_its_server_announces_limits() -> None:
    desk = FakeDesk()
    async with trio.open_nursery() as nursery:
        permits = Permits(desk, nursery, asking=False)
        assert await permits.enter(100, "m") is None
        assert desk.calls == []
        permits.observe("m", HEADERS)
        ticket = await permits.enter(100, "m")
        assert ticket is not None and ticket.cost.tokens == 100
        ticket.used = Tokens(input=42)
        permits.ended(ticket, "m", None, 300.0)
        permits.close(shard=3)
    names = [name for name, _ in desk.calls]
    assert names == ["grant", "report"]  # the headers and the ended ticket in one call
    assert desk.calls[1][1][0] == [("m", HEADERS), ticket]


async def test_a_429_goes_to_the_desk_at_once_and_paces_the_backend_from_then_on() -> None:
    desk = FakeDesk()
    async with trio.open_nursery() as nursery:
        permits = Permits(desk, nursery, asking=False)
        refused = Failure(ErrorKind.RATE_LIMITED, "429", True, retry_after=2.0)
        permits.ended(None, "m", refused, 300.0)
        assert [name for name, _ in desk.calls] == ["failed"]
        assert desk.calls[0][1][1:] == (ErrorKind.RATE_LIMITED, 2.0, 300.0)
        assert await permits.enter(5, "m") is not None
        nursery.cancel_scope.cancel()
    assert [name for name, _ in desk.calls] == ["failed", "grant"]


async def test_attempts_waiting_together_ask_in_one_call() -> None:
    desk = FakeDesk()
    tickets: list[Ticket | None] = []
    async with trio.open_nursery() as nursery:
        permits = Permits(desk, nursery, asking=True)

        async def one(tokens: int) -> None:
            tickets.append(await permits.enter(tokens, None))

        async with trio.open_nursery() as attempts:
            for tokens in (1, 2, 3):
                attempts.start_soon(one, tokens)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in desk.calls] == ["grant"]
    assert sorted(desk.calls[0][1][0]) == [
        (1, None, None),
        (2, None, None),
        (3, None, None),
    ]  # in the order they came
    assert sorted(t.cost.tokens for t in tickets if t is not None) == [1, 2, 3]
