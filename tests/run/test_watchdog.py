from __future__ import annotations

from typing import Any

import pytest
import trio

from orchestrator.run.watchdog import IdleWatchdog, signs_of_life, wait_for_first_event


async def test_an_idle_scope_is_cancelled_exactly_idle_seconds_after_its_last_touch(
    autojump_clock: Any,
) -> None:
    dog = IdleWatchdog()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dog.run)
        start = trio.current_time()
        with trio.CancelScope() as scope:
            watch = dog.watch(scope, 5.0)
            for _ in range(3):
                await trio.sleep(4.0)
                watch.touch(trio.current_time())
            await trio.sleep_forever()
        assert watch.fired and trio.current_time() - start == pytest.approx(17.0)
        nursery.cancel_scope.cancel()


async def test_a_paused_watch_never_fires(autojump_clock: Any) -> None:
    dog = IdleWatchdog()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dog.run)
        with trio.CancelScope() as scope:
            watch = dog.watch(scope, 1.0)
            watch.paused = True  # the consumer is slow, not the stream
            await trio.sleep(30.0)
            watch.touch(trio.current_time())
            await trio.sleep(0.5)
        assert not scope.cancelled_caught and not watch.fired
        watch.close()
        nursery.cancel_scope.cancel()


async def test_a_later_short_watch_wakes_the_watchdog_early(autojump_clock: Any) -> None:
    dog = IdleWatchdog()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dog.run)
        long_scope = trio.CancelScope()
        long_watch = dog.watch(long_scope, 100.0)
        await trio.sleep(1.0)
        start = trio.current_time()
        with trio.CancelScope() as short:
            dog.watch(short, 2.0)
            await trio.sleep_forever()
        assert trio.current_time() - start == pytest.approx(2.0)
        long_watch.close()
        nursery.cancel_scope.cancel()


async def test_ended_attempts_do_not_pile_up_in_the_heap(autojump_clock: Any) -> None:
    dog = IdleWatchdog()
    for _ in range(10_000):  # attempts with a deadline far away, each ending at once
        dog.release(dog.watch(trio.CancelScope(), None, trio.current_time() + 900.0))
    assert len(dog._timeline) <= 2048


async def test_signs_of_life_restart_the_idle_time_of_the_calling_tasks_attempt(autojump_clock: Any) -> None:
    dog = IdleWatchdog()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dog.run)
        start = trio.current_time()
        with trio.CancelScope() as scope:
            watch = dog.watch(scope, 5.0)
            for _ in range(3):
                await trio.sleep(4.0)
                signs_of_life()  # a keep-alive: no event, but not idle
            await trio.sleep_forever()
        assert watch.fired == "idle" and trio.current_time() - start == pytest.approx(17.0)
        dog.release(watch)
        signs_of_life()  # outside a watch: nothing to do
        nursery.cancel_scope.cancel()


async def test_idle_does_not_count_while_waiting_for_the_first_event(autojump_clock: Any) -> None:
    dog = IdleWatchdog()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dog.run)
        start = trio.current_time()
        with trio.CancelScope() as scope:
            watch = dog.watch(scope, 1.0, deadline=start + 100.0)
            wait_for_first_event()
            await trio.sleep(30.0)  # a model thinking: no event, no idle
            assert not watch.fired
            watch.touch(trio.current_time())  # the first event: idle counts from here
            await trio.sleep_forever()
        assert watch.fired == "idle" and trio.current_time() - start == pytest.approx(31.0)
        dog.release(watch)
        nursery.cancel_scope.cancel()
