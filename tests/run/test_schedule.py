"""The job queue: lanes, room, jobs that arrive later, and the end of the queue."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from orchestrator.run.schedule import JobQueue


async def test_jobs_added_later_are_taken_in_order_and_the_queue_ends_after_the_last() -> None:
    queue: JobQueue[int] = JobQueue((), expected=3)
    taken: list[int | None] = []

    async def worker() -> None:
        while (job := await queue.take()) is not None:
            taken.append(job)
            queue.finished()
        taken.append(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        await trio.testing.wait_all_tasks_blocked()
        assert taken == []  # nothing to take yet, but not the end either
        queue.add([1, 2])
        await trio.testing.wait_all_tasks_blocked()
        assert taken == [1, 2]
        queue.add([3])
    assert taken == [1, 2, 3, None]


async def test_drop_new_also_counts_the_jobs_still_to_come() -> None:
    queue: JobQueue[int] = JobQueue([1], expected=4)
    assert await queue.take() == 1
    queue.drop_new(also_taken=1)  # job 1 will not run either; 2-4 never arrive
    assert not queue.accepting
    queue.add([2, 3, 4])  # too late: ignored
    with trio.move_on_after(1) as scope:
        assert await queue.take() is None
    assert not scope.cancelled_caught


async def test_jobs_that_are_not_queued_count_as_finished_and_the_queue_ends_without_them() -> None:
    queue: JobQueue[int] = JobQueue((), expected=3)
    queue.add([1])
    queue.not_queued(2)  # jobs 2 and 3 end without a worker
    assert await queue.take() == 1
    queue.finished()
    with trio.move_on_after(1) as scope:
        assert await queue.take() is None
    assert not scope.cancelled_caught


async def test_not_queued_after_drop_new_is_not_counted_twice() -> None:
    queue: JobQueue[int] = JobQueue([1], expected=4)
    assert await queue.take() == 1
    queue.drop_new()  # 2-4 count as finished; job 1 still runs
    queue.not_queued(2)
    with trio.move_on_after(1) as scope:
        await queue.take()
    assert scope.cancelled_caught  # job 1 has not finished: the queue has not ended
    queue.finished()
    with trio.fail_after(1):
        assert await queue.take() is None


async def test_a_lane_without_room_waits_until_woken(autojump_clock: Any) -> None:
    room = {"a": False, "b": True}
    queue: JobQueue[str] = JobQueue(["a1", "b1", "a2"], lane_of=lambda job: job[0], room=room.__getitem__)
    assert await queue.take() == "b1"  # lane a has no room; lane b's job goes first
    room["a"] = True
    queue.wake()
    assert await queue.take() == "a1"
    assert await queue.take() == "a2"


class _Steps(trio.abc.Instrument):
    """Counts how often each task runs."""

    def __init__(self) -> None:
        self.steps: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] = self.steps.get(task, 0) + 1


async def test_waking_with_no_job_waiting_leaves_idle_workers_parked() -> None:
    queue: JobQueue[int] = JobQueue([1], expected=2)
    assert await queue.take() == 1
    counter = _Steps()
    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.take)
            await trio.testing.wait_all_tasks_blocked()
            [idle] = nursery.child_tasks
            before = counter.steps[idle]
            queue.wake()  # no job waits: waking the idle worker would only make it park again
            await trio.testing.wait_all_tasks_blocked()
            assert counter.steps[idle] == before
            queue.add([2])  # a job arrives: now it wakes, and takes it
            await trio.testing.wait_all_tasks_blocked()
            assert counter.steps[idle] == before + 1
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_the_adder_waits_for_room_until_workers_take_jobs_or_new_ones_are_dropped() -> None:
    queue: JobQueue[int] = JobQueue((), expected=6)
    queue.add([1, 2, 3])
    woken: list[str] = []

    async def adder() -> None:
        await queue.wait_for_room(2)  # three new jobs wait: fewer than two is room
        woken.append("room")
        queue.add([4, 5])
        await queue.wait_for_room(2)
        woken.append("dropped")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(adder)
        await trio.testing.wait_all_tasks_blocked()
        assert await queue.take() == 1
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []  # two still wait
        assert await queue.take() == 2
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["room"]
        queue.drop_new()  # no new job will start: no reason to wait for room
    assert woken == ["room", "dropped"]
