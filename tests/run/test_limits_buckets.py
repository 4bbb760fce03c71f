"""The pacer's buckets against what the server says, Anthropic's separate input and output meters,
and the in-flight limit derived by Little's law; on trio's virtual clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel

from orchestrator.errors import ConfigError
from orchestrator.events import LimiterChanged, RateLimitInfo, Tokens
from orchestrator.run.limits import DerivedLimit, Gate, Pacer
from orchestrator.spec import BackendLimits
from tests.helpers import make_spec


class Changes:
    def __init__(self) -> None:
        self.seen: list[LimiterChanged] = []

    async def __call__(self, change: LimiterChanged) -> None:
        self.seen.append(change)

    def of(self, kind: str) -> list[LimiterChanged]:
        return [c for c in self.seen if c.change == kind]


async def _no_notify(change: LimiterChanged) -> None:
    pass


async def start_times(pacer: Pacer, n: int, nursery: trio.Nursery) -> list[float]:
    """Start ``n`` acquirers in order; the list fills with their start times."""
    times: list[float] = []

    async def one() -> None:
        await pacer.acquire(1)
        times.append(trio.current_time())

    for _ in range(n):
        nursery.start_soon(one)
        await trio.lowlevel.checkpoint()
    return times


async def test_a_probing_pacer_sends_one_attempt_then_bursts_once_the_server_has_spoken(
    autojump_clock: Any,
) -> None:
    pacer = Pacer("x", None, None, _no_notify, burst=60.0, probe=True)
    async with trio.open_nursery() as nursery:
        times = await start_times(pacer, 4, nursery)
        await trio.sleep(0.3)
        assert times == [0.0]  # the others wait for the first reply's headers
        await pacer.observe(RateLimitInfo(requests_limit=600, requests_remaining=599), 1)
    assert times == [0.0, 0.3, 0.3, 0.3]  # plenty remains: the rest at once


async def test_without_a_word_from_the_server_the_rest_go_when_the_probe_ends_or_after_a_second(
    autojump_clock: Any,
) -> None:
    pacer = Pacer("x", None, None, _no_notify, burst=60.0, probe=True)
    async with trio.open_nursery() as nursery:
        times = await start_times(pacer, 3, nursery)
    assert times == [0.0, 1.0, 1.0]  # the probe said nothing and is still running
    pacer = Pacer("x", None, None, _no_notify, burst=60.0, probe=True)
    first = await pacer.acquire(1)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        times = await start_times(pacer, 2, nursery)
        await trio.sleep(0.25)
        pacer.release(first)  # it ended without headers (a connection error, say)
    assert times == [start + 0.25, start + 0.25]


@pytest.mark.parametrize(("reporter", "at_once"), [(1, 9), (None, 18)])
async def test_the_servers_count_is_less_what_was_started_after_the_attempt_it_answers(
    autojump_clock: Any, reporter: int | None, at_once: int
) -> None:
    pacer = Pacer("x", 60, None, _no_notify, burst=60.0)
    for _ in range(10):
        await pacer.acquire(1)
    # The server counted start 1 and had 20 left (others use the same key): the 9 sent after it
    # are not in its count, so 11 remain, less the 1.2 s margin; not knowing the start, 20.
    await pacer.observe(RateLimitInfo(requests_limit=60, requests_remaining=20), reporter)
    start = trio.current_time()
    count = 0
    while trio.current_time() == start:
        await pacer.acquire(1)
        count += 1
    assert count - 1 == at_once


async def test_a_quota_that_resets_sooner_than_a_bucket_refills_turns_bursting_off(
    autojump_clock: Any,
) -> None:
    changes = Changes()
    pacer = Pacer("x", None, None, changes, burst=60.0)
    # 1,200 a minute in windows of a second: 19 left of this second's 20, full again in 0.8 s
    await pacer.observe(RateLimitInfo(requests_limit=1200, requests_remaining=19, requests_reset_s=0.8))
    assert pacer.burst == 0.0
    [change] = changes.of("burst")
    assert "shorter windows" in change.reason
    async with trio.open_nursery() as nursery:
        times = await start_times(pacer, 4, nursery)
    gap = 60.0 / (1200 * 0.98)  # evenly spaced, a little below the limit
    assert times == pytest.approx([0.0, gap, 2 * gap, 3 * gap])


@pytest.mark.parametrize(
    ("remaining", "reset"),
    [(0, 56.0), (1000, 10.0), (1199, 0.01)],
    ids=["a minute's window used up", "a refilling bucket", "too little used to judge"],
)
async def test_a_reset_no_sooner_than_the_bucket_needs_keeps_bursting(
    autojump_clock: Any, remaining: int, reset: float
) -> None:
    pacer = Pacer("x", None, None, _no_notify, burst=60.0)
    await pacer.observe(
        RateLimitInfo(requests_limit=1200, requests_remaining=remaining, requests_reset_s=reset)
    )
    assert pacer.burst > 0


async def test_a_429_for_an_attempt_sent_before_the_first_429_came_back_is_not_a_second_one(
    autojump_clock: Any,
) -> None:
    gate = Gate("x", BackendLimits(rpm=600), None, _no_notify)
    early = [await gate.enter(1, None) for _ in range(3)]
    await trio.sleep(0.1)
    for ticket in early:  # one burst, refused together: one 429 and its echoes
        gate.leave(ticket)
        await gate.failed(ticket, "rate_limited", None, 60.0)
    assert gate.pacer.burst > 0
    late = await gate.enter(1, None)
    gate.leave(late)
    await gate.failed(late, "rate_limited", None, 60.0)  # sent after the first came back
    assert gate.pacer.burst == 0.0


async def test_input_and_output_tokens_are_paced_each_by_its_own_limit(autojump_clock: Any) -> None:
    # 10 input tokens a second, 1 output token a second, evenly spaced
    gate = Gate("x", BackendLimits(input_tpm=600, output_tpm=60, burst="none"), None, _no_notify)
    await gate.enter(105, None, output=5)  # 100 input (10 s), 5 output (5 s)
    await gate.enter(105, None, output=5)
    assert trio.current_time() == pytest.approx(10.0)  # the input limit is the tighter
    await gate.enter(30, None, output=20)  # 10 input (1 s), 20 output (20 s)
    await gate.enter(30, None, output=20)
    assert trio.current_time() == pytest.approx(10.0 + 10.0 + 20.0)


async def test_output_tokens_budgeted_and_not_used_go_back(autojump_clock: Any) -> None:
    gate = Gate("x", BackendLimits(output_tpm=600, burst="none"), None, _no_notify)  # 10 a second
    ticket = await gate.enter(1010, None, output=1000)  # the whole budget: 100 s of refill
    ticket.used = Tokens(input=10, output=10)
    gate.leave(ticket)
    await gate.enter(1010, None, output=1000)
    assert trio.current_time() == pytest.approx(1.0)  # only the 10 used were kept


@pytest.mark.parametrize(("cache_read", "longest"), [(990, 30.0), (0, None)])
async def test_cache_reads_do_not_slow_a_batch_that_shares_a_cached_prefix(
    autojump_clock: Any, cache_read: int, longest: float | None
) -> None:
    gate = Gate("x", BackendLimits(input_tpm=6000, burst="none"), None, _no_notify)  # 100 a second
    for _ in range(20):  # prompts of ~1,000 tokens, all but 10 of them a cached prefix
        ticket = await gate.enter(1000 + 10, None, output=10)
        ticket.used = Tokens(input=1000 - cache_read, output=10, cache_read=cache_read)
        gate.leave(ticket)
    if longest is not None:
        assert trio.current_time() < longest  # 10 s a request if cache reads counted
    else:
        assert trio.current_time() == pytest.approx(19 * 10.0)


def test_the_derived_limit_is_rate_times_latency_with_headroom_between_floor_and_ceiling() -> None:
    derived = DerivedLimit(64, 1024)
    assert derived.target(100.0) == 64  # no latency seen yet
    derived.observe(2.0)
    assert derived.target(None) == 64  # no known rate
    assert derived.target(100.0) == 400  # 2 x 100/s x 2 s
    assert derived.target(1000.0) == 1024
    assert derived.target(1.0) == 64  # never below the old fixed default


@pytest.mark.parametrize("adaptive", [True, False])
async def test_a_derived_limit_rises_with_the_rate_and_the_latency_seen(
    autojump_clock: Any, adaptive: bool
) -> None:
    changes = Changes()
    gate = Gate("x", BackendLimits(rpm=6000, adaptive=adaptive), 4, changes, derive_up_to=300)
    assert gate.slots is not None and gate.slots.total == 4
    ticket = await gate.enter(1, None)
    await trio.sleep(1.0)
    gate.leave(ticket)
    await gate.succeeded(ticket)
    assert gate.slots.total == 200  # 2 x 100 a second x 1 s
    [change] = changes.of("concurrency")
    assert change.value == 200 and "Little's law" in change.reason
    ticket = await gate.enter(1, None)
    await trio.sleep(1.2)  # the average moves to 1.02 s: a target of 204 is no change worth making
    gate.leave(ticket)
    await gate.succeeded(ticket)
    assert gate.slots.total == 200 and len(changes.of("concurrency")) == 1


async def test_an_explicit_limit_is_not_derived(autojump_clock: Any) -> None:
    gate = Gate("x", BackendLimits(rpm=6000, adaptive=False), 4, _no_notify)
    ticket = await gate.enter(1, None)
    await trio.sleep(1.0)
    gate.leave(ticket)
    await gate.succeeded(ticket)
    assert gate.slots is not None and gate.slots.total == 4


def test_input_and_output_token_limits_are_settings_of_a_backend_and_of_its_models() -> None:
    spec = make_spec(["q"], backends={"sim": {"input_tpm": 1000, "models": {"m": {"output_tpm": 10}}}})
    assert spec.limits["sim"].input_tpm == 1000.0
    assert spec.limits["sim"].models["m"].output_tpm == 10.0
    with pytest.raises(ConfigError, match=r"backends.sim.output_tpm: must be > 0"):
        make_spec(["q"], backends={"sim": {"output_tpm": 0}})
