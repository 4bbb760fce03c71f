"""The event bus: one bounded channel in, every subscriber served in order, in batches.

Workers send tagged events into one bounded memory channel. One task drains it, taking every
event already waiting without another checkpoint (``receive_nowait``), and hands each batch to
each subscriber in turn: the log first (so an event is on disk before anyone else counts it),
then aggregation, progress and the user's own subscribers. Subscribers are awaited, so a slow
one slows the batch through the channel's backpressure; nothing is ever dropped or hoarded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import trio

from orchestrator.events import Tagged

MAX_BATCH = 32768
# Events delivered as one batch, at most. The bus waits while the log fsyncs a batch (group
# commit), and the workers fill the channel meanwhile: a batch must take up what they sent, or
# the bus falls behind and every worker waits on a full channel, a wake-up per event.


class Subscriber(Protocol):
    async def deliver(self, batch: Sequence[Tagged]) -> None:
        """Take a batch of events (per-job order kept). Raising ends the whole run."""
        ...


@attrs.define(eq=False)
class Barrier:
    """Sent through the bus to learn when every event sent before it has been delivered."""

    reached: trio.Event = attrs.Factory(trio.Event)


Item = Tagged | Barrier


class CallbackSubscriber:
    """Calls a plain function with every event, on the bus task."""

    def __init__(self, callback: Callable[[Tagged], object]) -> None:
        self.callback = callback

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        callback = self.callback
        for tagged in batch:
            callback(tagged)


class ChannelSubscriber:
    """Forwards every event into a bounded channel for async iteration.

    If the reader closes its end, delivery to it stops and the batch goes on.
    """

    def __init__(self, send: trio.MemorySendChannel[Tagged]) -> None:
        self.send = send
        self.open = True

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        if not self.open:
            return
        try:
            for tagged in batch:
                await self.send.send(tagged)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.open = False


async def run_bus(
    receive: trio.MemoryReceiveChannel[Item],
    subscribers: Sequence[Subscriber],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver everything sent on ``receive`` until every sender has closed it.

    Cancellation: a batch being delivered when the task is cancelled may reach some subscribers
    and not others; the runner cancels the bus only when the run is being torn down anyway.
    """
    task_status.started()
    receive_nowait = receive.receive_nowait  # looked up once: the loop below runs per event
    async with receive:
        while True:
            try:
                first = await receive.receive()
            except trio.EndOfChannel:
                return
            batch: list[Tagged] = []
            append = batch.append
            item: Item = first
            while True:
                if isinstance(item, Barrier):
                    await _deliver(subscribers, batch)
                    batch = []
                    append = batch.append
                    item.reached.set()
                else:
                    append(item)
                    if len(batch) >= MAX_BATCH:
                        break
                try:
                    item = receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await _deliver(subscribers, batch)


async def _deliver(subscribers: Sequence[Subscriber], batch: list[Tagged]) -> None:
    if batch:
        for subscriber in subscribers:
            await subscriber.deliver(batch)
