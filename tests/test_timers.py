"""The shared timeline: items come out when due, in order, and a sleep ends on the earliest."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.timers import Timeline


@given(st.lists(st.tuples(st.integers(0, 20), st.integers()), max_size=30), st.integers(0, 20))
def test_pop_due_takes_what_is_due_earliest_first_and_equal_times_in_push_order(
    items: list[tuple[int, int]], now: int
) -> None:
    timeline: Timeline[tuple[int, int]] = Timeline()
    for due, value in items:
        timeline.push(due, (due, value))
    taken = list(timeline.pop_due(now))
    assert taken == sorted((item for item in items if item[0] <= now), key=lambda item: item[0])
    assert len(timeline) == sum(due > now for due, _ in items)


async def test_a_sleep_ends_when_the_earliest_item_is_due_even_one_pushed_meanwhile(
    autojump_clock: Any,
) -> None:
    timeline: Timeline[str] = Timeline()
    timeline.push(10.0, "late")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timeline.sleep)
        await trio.testing.wait_all_tasks_blocked()
        timeline.push(3.0, "early")  # sooner than what the sleeper waits for
    assert trio.current_time() == 3.0
    assert list(timeline.pop_due(trio.current_time())) == ["early"]


async def test_wake_ends_a_sleep_with_nothing_due(autojump_clock: Any) -> None:
    timeline: Timeline[str] = Timeline()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timeline.sleep)  # nothing in it: would sleep for ever
        await trio.sleep(1.0)
        timeline.wake()
    assert trio.current_time() == 1.0


def test_keep_drops_what_is_no_longer_wanted() -> None:
    timeline: Timeline[int] = Timeline()
    for value in range(10):
        timeline.push(float(10 - value), value)
    timeline.keep(lambda value: value % 2 == 0)
    assert list(timeline.pop_due(100.0)) == [8, 6, 4, 2, 0]
