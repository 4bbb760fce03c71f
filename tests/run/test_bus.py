from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from orchestrator.events import Tagged, TextDelta
from orchestrator.run.bus import Barrier, ChannelSubscriber, run_bus


def tagged(i: int) -> Tagged:
    return Tagged("j", 1, i, float(i), TextDelta(str(i)))


class Batches:
    def __init__(self) -> None:
        self.batches: list[list[Tagged]] = []

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        self.batches.append(list(batch))


async def test_waiting_events_are_delivered_together_in_order() -> None:
    send, receive = trio.open_memory_channel[Any](100)
    sub = Batches()
    for i in range(50):
        send.send_nowait(tagged(i))
    send.close()
    await run_bus(receive, [sub])
    assert len(sub.batches) == 1 and [t.seq for t in sub.batches[0]] == list(range(50))


async def test_a_barrier_is_reached_after_everything_sent_before_it() -> None:
    send, receive = trio.open_memory_channel[Any](100)
    sub = Batches()
    barrier = Barrier()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_bus, receive, [sub])
        async with send:
            for i in range(10):
                await send.send(tagged(i))
            await send.send(barrier)
            await barrier.reached.wait()
            assert sum(len(b) for b in sub.batches) == 10


async def test_a_reader_that_goes_away_does_not_block_the_bus() -> None:
    out_send, out_receive = trio.open_memory_channel[Tagged](1)
    out_receive.close()
    sub = ChannelSubscriber(out_send)
    send, receive = trio.open_memory_channel[Any](10)
    async with send:
        for i in range(5):
            send.send_nowait(tagged(i))
    await run_bus(receive, [sub])
    assert not sub.open
