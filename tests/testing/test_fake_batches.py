"""The fake batch APIs cancel as the providers do (a while ``canceling``, then ended; what
finished before the cancel keeps its outcome, the rest ends canceled; an ended batch refuses a
cancel) and list their batches newest first; driven by the batch backends' own clients."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from orchestrator.backends.http.batch import anthropic, openai
from orchestrator.backends.http.batch.provider import Outcome, RemoteBatches
from orchestrator.backends.http.batch.remote import Control
from orchestrator.backends.http.exchange import open_http_pool
from orchestrator.errors import ErrorKind, FatalError
from orchestrator.testing.anthropic.batches import anthropic_batch_store, open_fake_anthropic_batches
from orchestrator.testing.openai.batches import open_fake_openai_batches, openai_batch_store
from orchestrator.testing.remote_batches import BatchStore

KEY = "sk-test-0123456789"


@asynccontextmanager
async def client(name: str, store: BatchStore) -> AsyncIterator[RemoteBatches]:
    module: Any = anthropic if name == "anthropic" else openai
    open_fake = open_fake_anthropic_batches if name == "anthropic" else open_fake_openai_batches
    async with open_fake(store) as fake:
        settings = module.Settings(base_url=fake.base_url)
        async with open_http_pool(settings) as pool:
            api = module.KIND.batch_api.streaming
            control = Control(pool, api.headers(settings, api.options(), None), None)
            yield module.KIND.batch_api.remote(control, settings, lambda text: text)


STORES = {"anthropic": anthropic_batch_store, "openai": openai_batch_store}
REQUESTS = [(f"r{n}", {"model": "m", "messages": [{"role": "user", "content": f"q{n}"}]}) for n in range(4)]


@pytest.mark.parametrize("name", STORES)
async def test_a_cancel_keeps_what_finished_and_cancels_the_rest(
    name: str, autojump_clock: trio.abc.Clock
) -> None:
    store = STORES[name](400)  # the requests finish at 100, 200, 300 and 400 s
    async with client(name, store) as remote:
        batch_id = await remote.submit(REQUESTS, "label")
        await trio.sleep(250)
        await remote.cancel(batch_id)
        cancelling = await remote.poll(batch_id)
        assert not cancelling.ended and cancelling.counts["processing"] == 2
        await trio.sleep(store.cancelling)
        assert (await remote.poll(batch_id)).ended
        outcomes: dict[str, Outcome] = {o.custom_id: o for o in await remote.results(batch_id)}
        with pytest.raises(FatalError) as refused:
            await remote.cancel(batch_id)
    assert store.cancels == [batch_id, batch_id]
    assert [outcomes[cid].reply is not None for cid in ("r0", "r1")] == [True, True]
    assert [outcomes[cid].error is not None and outcomes[cid].error.kind for cid in ("r2", "r3")] == [
        ErrorKind.API_ERROR,
        ErrorKind.API_ERROR,
    ]
    assert refused.value.kind == ErrorKind.BAD_REQUEST


@pytest.mark.parametrize("name", STORES)
async def test_a_batch_is_found_again_among_the_listed_ones(
    name: str, autojump_clock: trio.abc.Clock
) -> None:
    store = STORES[name](400)
    async with client(name, store) as remote:
        since = time.time()
        first = await remote.submit(REQUESTS, "first")
        second = await remote.submit(REQUESTS[:2], "second")
        found_second = await remote.find("second", 2, since, known={first})
        found_first = await remote.find("first", 4, since, known={second})
        missing = await remote.find("third", 3, since, known={first, second})
    assert (found_first, found_second, missing) == (first, second, None)


@pytest.mark.parametrize("name", STORES)
async def test_finishing_the_batches_ends_each_one_processing_with_every_request_answered(
    name: str, autojump_clock: trio.abc.Clock
) -> None:
    store = STORES[name](3600)
    async with client(name, store) as remote:
        batch_id = await remote.submit(REQUESTS, "label")
        await trio.sleep(10)
        assert not (await remote.poll(batch_id)).ended
        assert store.finish() == [batch_id]
        assert (await remote.poll(batch_id)).ended and store.finish() == []
        outcomes = await remote.results(batch_id)
    assert sorted(o.custom_id for o in outcomes if o.reply is not None) == [cid for cid, _ in REQUESTS]
