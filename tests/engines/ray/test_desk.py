"""A backend's desk without Ray (its methods are coroutines on an asyncio loop, as Ray runs
them): permits granted in blocks, cancellations carried to the shard that runs the attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.engines.ray.desk import BackendDesk
from orchestrator.errors import ErrorKind
from orchestrator.events import RateLimitInfo, Tokens
from orchestrator.spec import BackendLimits


def on_loop(test: Callable[[BackendDesk], Awaitable[Any]], limits: BackendLimits | None = None) -> Any:
    async def main() -> Any:
        desk = BackendDesk("openai", limits or BackendLimits(), True)
        try:
            return await test(desk)
        finally:
            desk.close()

    return asyncio.run(main())


def test_without_limits_one_call_gets_a_whole_shards_permits() -> None:
    async def test(desk: BackendDesk) -> None:
        tickets = await desk.grant([(100, None, None)] * 32)
        assert [t.cost.tokens for t in tickets] == [100] * 32

    on_loop(test)


def test_each_permit_charges_the_output_tokens_of_its_reply_budget_only() -> None:
    async def test(desk: BackendDesk) -> None:
        # 1,000 tokens estimated, 200 of them the reply budget: the output meter is charged
        # 200 and the input meter the other 800, as the local engine charges them.
        tickets = await desk.grant([(1000, None, 200), (1000, None, None)])
        assert [(t.cost.input, t.cost.output) for t in tickets] == [(800, 200), (1000, 1000)]

    on_loop(test)


def test_a_paced_call_gets_only_the_permits_due_within_its_block() -> None:
    async def test(desk: BackendDesk) -> None:
        # One start a second, evenly spaced: the second permit is a second away, not 5 ms.
        tickets = await desk.grant([(10, None, None), (20, None, None), (30, None, None)])
        assert [t.cost.tokens for t in tickets] == [10]

    on_loop(test, BackendLimits(rpm=60, burst="none"))


def test_a_cancellation_reaches_the_waiting_call_of_its_shard_only() -> None:
    async def test(desk: BackendDesk) -> None:
        first = asyncio.ensure_future(desk.cancelled(1))
        other = asyncio.ensure_future(desk.cancelled(2))
        await asyncio.sleep(0)
        await desk.cancel(1, 7)
        await desk.cancel(1, 3)
        assert await first == [3, 7]
        assert not other.done()
        await desk.forget(2)  # the shard is over: its call returns, with nothing
        assert await other is None

    on_loop(test)


def test_a_shard_over_before_its_call_came_gets_nothing_and_late_cancels_are_dropped() -> None:
    async def test(desk: BackendDesk) -> None:
        await desk.forget(4)
        await desk.cancel(4, 1)  # the shard has ended: nobody is left to stop
        assert await desk.cancelled(4) is None

    on_loop(test)


def test_what_a_shard_reports_paces_the_next_permits() -> None:
    async def test(desk: BackendDesk) -> None:
        [ticket] = await desk.grant([(100, None, None)])
        ticket.used = Tokens(input=40)
        empty = RateLimitInfo(requests_limit=60, requests_remaining=0, requests_reset_s=30.0)
        await desk.report([ticket, (None, empty)])
        # The server's quota is used up: one request comes back a second later, not sooner.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(desk.grant([(1, None, None)]), 0.2)

    on_loop(test)


def test_a_429_with_retry_after_pauses_every_permit() -> None:
    async def test(desk: BackendDesk) -> None:
        [ticket] = await desk.grant([(1, None, None)])
        await desk.failed(ticket, ErrorKind.RATE_LIMITED, 30.0, 300.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(desk.grant([(1, None, None)]), 0.2)

    on_loop(test)
