"""The spend cap and remote batches: a chunk is sent only while the cap has room for what is
spent and reserved (each attempt reserved its estimate at the batch price when it started), so
a retry's chunk is not sent once the cap is passed."""

from __future__ import annotations

import trio

from orchestrator.events import JobFailed
from orchestrator.testing.anthropic.batches import Expired, anthropic_batch_store, open_fake_anthropic_batches
from orchestrator.testing.anthropic.server import Reply, Usage
from tests.http_helpers import events_of, run_jobs

MODEL = "claude-sonnet-4-5"


async def run(cap: float) -> tuple[dict[str, int], list[JobFailed]]:
    store = anthropic_batch_store(30)
    # "a" costs far more than its estimate (its usage passes max_tokens); "b" expires and retries.
    store.script("a", Reply.text("long", usage=Usage(input_tokens=10, output_tokens=1_000_000)))
    store.script("b", Expired())
    async with open_fake_anthropic_batches(store) as fake:
        settings = {"base_url": fake.base_url, "batch_linger": 1.0, "poll_min": 1.0, "batch_requests": 2}
        jobs = [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}]
        _, events = await run_jobs(
            "anthropic-batch", settings, jobs, model=MODEL, max_tokens=10, concurrency=10, max_cost_usd=cap
        )
    return dict(store.submissions), events_of(events, JobFailed)


async def test_a_chunk_that_would_pass_the_cap_is_not_sent(autojump_clock: trio.abc.Clock) -> None:
    submissions, failed = await run(cap=1.0)
    assert submissions == {"a": 1, "b": 1}
    [failure] = failed
    assert failure.error_kind == "spend_cap" and not failure.retryable


async def test_within_the_cap_the_retry_goes_in_a_later_chunk(autojump_clock: trio.abc.Clock) -> None:
    submissions, failed = await run(cap=100.0)
    assert submissions == {"a": 1, "b": 2} and failed == []
