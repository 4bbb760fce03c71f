"""A control call to a server that never answers gives up after ``control_timeout``: the poll
(or list, or cancel) that timed out is asked again, and a create becomes a create in doubt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from orchestrator.backends.http.batch.create import create
from orchestrator.backends.http.batch.provider import CreateInDoubt
from orchestrator.backends.http.batch.remote import Control
from orchestrator.errors import ErrorKind, RetryableError
from orchestrator.http.pool import open_pool


@asynccontextmanager
async def silent_server(trickle: bool = False) -> AsyncIterator[str]:
    """A server that reads each request and never answers it (``trickle``: answers with the head
    and then ``{"id": "b1"}`` a byte every 50 s); its base URL."""

    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        if trickle:
            body = b'{"id": "b1"}'
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
            for byte in body:
                await trio.sleep(50)
                await stream.send_all(bytes([byte]))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def test_a_poll_with_no_answer_times_out_as_a_retryable_error(autojump_clock: trio.abc.Clock) -> None:
    async with silent_server() as base, open_pool() as pool:
        control = Control(pool, [], None, timeout=7.0)
        start = trio.current_time()
        with pytest.raises(RetryableError) as caught:
            await control.call("GET", base + "/v1/messages/batches/b1")
    assert caught.value.kind == ErrorKind.TIMEOUT and "no answer within 7s" in str(caught.value)
    assert trio.current_time() - start == pytest.approx(7.0, abs=0.1)


async def test_a_create_with_no_answer_is_in_doubt(autojump_clock: trio.abc.Clock) -> None:
    async with silent_server() as base, open_pool() as pool:
        with pytest.raises(CreateInDoubt) as caught:
            await create(Control(pool, [], None, timeout=7.0), base + "/v1/messages/batches", b"{}")
    assert caught.value.kind == ErrorKind.TIMEOUT


async def test_an_answer_that_keeps_coming_is_not_cut_short(autojump_clock: trio.abc.Clock) -> None:
    async with silent_server(trickle=True) as base, open_pool() as pool:
        control = Control(pool, [], None, timeout=60.0)
        start = trio.current_time()
        answer = await control.call("GET", base + "/slow")
    assert answer == {"id": "b1"}
    assert trio.current_time() - start >= 600  # 12 pieces 50 s apart, each within the timeout
