"""A backend's desk without Ray (its methods are coroutines on an asyncio loop, as Ray runs
them): permits granted in blocks, cancellations carried to the shard that runs the attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.engines.ray.desk import BackendDesk
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
        tickets = await desk.grant([(100, None)] * 32)
        assert [t.tokens for t in tickets] == [100] * 32

    on_loop(test)


def test_a_paced_call_gets_only_the_permits_due_within_its_block() -> None:
    async def test(desk: BackendDesk) -> None:
        # One start a second, evenly spaced: the second permit is a second away, not 5 ms.
        tickets = await desk.grant([(10, None), (20, None), (30, None)])
        assert [t.tokens for t in tickets] == [10]

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
