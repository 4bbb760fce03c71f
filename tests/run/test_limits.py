"""Rate limits, adaptive concurrency and the spend cap, on trio's virtual clock."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from orchestrator.errors import ConfigError
from orchestrator.events import AttemptStarted, LimiterChanged, RateLimitInfo, RetryScheduled, Tagged, Tokens
from orchestrator.run.batch import execute
from orchestrator.run.control import RunControl
from orchestrator.run.limits import AdaptiveLimit, Cost, Gate, Pacer, Slots
from orchestrator.spec import BackendLimits, RateLimits
from tests.helpers import Recorder, make_spec, run_virtual


async def _no_notify(change: LimiterChanged) -> None:
    pass


def bucket_overdraft(
    times: Sequence[float], per_minute: float, cost: float = 1.0, bucket_s: float = 60.0
) -> float:
    """How far ``times`` (starts costing ``cost`` each) overdraw a token bucket that holds
    ``bucket_s`` seconds of refill at ``per_minute``: 0 when every start found enough in it."""
    unit = cost * 60.0 / per_minute
    tat, worst = -math.inf, 0.0
    for t in sorted(times):
        worst = max(worst, tat - t - max(bucket_s - unit, 0.0))
        tat = max(tat, t) + unit
    return worst


def max_in_window(times: Sequence[float], window: float = 60.0) -> int:
    """The most events in any half-open window of ``window`` seconds."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


async def test_pacer_spaces_requests_evenly_and_serves_in_order(autojump_clock: Any) -> None:
    pacer = Pacer("x", rpm=60, tpm=None, notify=_no_notify)
    starts: list[tuple[int, float]] = []

    async def request(n: int) -> None:
        await pacer.acquire(1)
        starts.append((n, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(request, n)
            await trio.lowlevel.checkpoint()  # arrive in order
    assert [n for n, _ in starts] == [0, 1, 2, 3, 4]
    assert [t for _, t in starts] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


async def test_pacer_spaces_by_tokens_and_gives_back_what_was_not_used(autojump_clock: Any) -> None:
    pacer = Pacer("x", rpm=None, tpm=600, notify=_no_notify)  # 10 tokens a second
    number = await pacer.acquire(100)
    pacer.release(number, Cost(tokens=40))  # 60 tokens were reserved for nothing
    start = trio.current_time()
    await pacer.acquire(10)
    assert trio.current_time() - start == pytest.approx(4.0)


@pytest.mark.parametrize(("refund", "wait"), [(True, 4.0), (False, 10.0)])
async def test_a_gate_gives_unused_tokens_back_only_to_a_server_that_refunds_them(
    autojump_clock: Any, refund: bool, wait: float
) -> None:
    # 10 tokens a second, evenly spaced (no bucket to absorb the first request)
    gate = Gate("x", BackendLimits(tpm=600, burst="none"), None, _no_notify, refund=refund)
    ticket = await gate.enter(100, None)
    ticket.used = Tokens(input=10, output=30)
    gate.leave(ticket)
    start = trio.current_time()
    await gate.enter(10, None)
    assert trio.current_time() - start == pytest.approx(wait)  # 40 or all 100 tokens spent


async def test_a_pause_holds_every_waiter_and_is_announced(autojump_clock: Any) -> None:
    changes: list[LimiterChanged] = []

    async def notify(change: LimiterChanged) -> None:
        changes.append(change)

    pacer = Pacer("x", rpm=None, tpm=None, notify=notify)
    await pacer.pause(7.0, "429")
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(pacer.acquire, 1)
    assert trio.current_time() - start == pytest.approx(7.0)
    assert [c.change for c in changes] == ["paused"]  # announced once, when it began


async def test_a_lower_announced_limit_is_adopted_and_an_empty_quota_pauses(autojump_clock: Any) -> None:
    pacer = Pacer("x", rpm=100, tpm=None, notify=_no_notify)
    await pacer.observe(RateLimitInfo(requests_limit=30, requests_remaining=0, requests_reset_s=5.0))
    assert pacer.rpm == 30
    # One request of a 30-a-minute quota comes back in 2 s: enough to go on.
    assert pacer.paused_until == pytest.approx(trio.current_time() + 60.0 / 30)
    await pacer.observe(RateLimitInfo(requests_limit=500))
    assert pacer.rpm == 100  # never above what the user configured


@pytest.mark.parametrize(
    "limits",
    [BackendLimits(), BackendLimits(rpm=120, burst=2.0), BackendLimits(rpm=60, tpm=6000, burst="none")],
    ids=["no limit", "rpm with a burst", "rpm and tpm, smooth"],
)
async def test_a_gate_admits_alike_whether_a_start_passes_at_once_or_waits_in_line(
    autojump_clock: Any, limits: BackendLimits
) -> None:
    # Model "m" has a pacer of its own (with no limit): its starts always go through the awaited
    # path; model None's take the gate's path without an await whenever the pacer lets them go
    # now. The admissions (order, time, charge) must be the same.
    async def admissions(model: str | None) -> list[tuple[int, float, float, Cost]]:
        gate = Gate("x", attrs.evolve(limits, models={"m": RateLimits()}), 3, _no_notify)
        seen: list[tuple[int, float, float, Cost]] = []

        async def attempt(n: int) -> None:
            ticket = await gate.enter(40 + n, model, 20)
            seen.append((n, trio.current_time(), ticket.started, ticket.cost))
            await trio.sleep(0.3 + 0.1 * (n % 3))
            ticket.used = Tokens(10 + n, 5)
            gate.leave(ticket)

        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(attempt, n)
                await trio.lowlevel.checkpoint()  # arrive in order
                if n == 5:
                    await gate.pacer.pause(1.5, "a server's Retry-After")
        return seen

    start = trio.current_time()
    direct = await admissions(None)
    autojump_clock.jump(1000.0)  # the second run on a fresh minute
    in_line = await admissions("m")
    shift = in_line[0][1] - direct[0][1]
    assert direct[0][1] == start
    assert [(n, c) for n, _, _, c in direct] == [(n, c) for n, _, _, c in in_line]
    # when each was let in, and the start its ticket holds
    assert [t + shift for _, t, _, _ in direct] == pytest.approx([t for _, t, _, _ in in_line])
    assert [s + shift for _, _, s, _ in direct] == pytest.approx([s for _, _, s, _ in in_line])


async def test_slots_serve_waiters_in_order_and_hand_over_freed_slots() -> None:
    slots = Slots(1)
    slots.acquire_nowait()
    order: list[str] = []

    async def waiter(name: str) -> None:
        await slots.acquire()
        order.append(name)

    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):
            nursery.start_soon(waiter, name)
            await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            slots.acquire_nowait()  # nobody jumps the queue
        slots.release()  # to "a", directly
        assert slots.used == 1 and not slots.has_room()
        await trio.testing.wait_all_tasks_blocked()
        slots.release()  # to "b"
    assert order == ["a", "b"] and slots.used == 1


async def test_slots_a_cancelled_waiter_holds_nothing(autojump_clock: Any) -> None:
    slots = Slots(1)
    slots.acquire_nowait()
    with trio.move_on_after(1):
        await slots.acquire()
    slots.release()
    assert slots.used == 0 and slots.has_room()


async def test_slots_follow_a_lowered_and_a_raised_total() -> None:
    slots = Slots(2)
    slots.acquire_nowait()
    slots.acquire_nowait()
    slots.total = 1  # running attempts go on; the next release only frees a slot
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slots.acquire)
        await trio.testing.wait_all_tasks_blocked()
        slots.release()
        await trio.testing.wait_all_tasks_blocked()
        assert slots.used == 1 and nursery.child_tasks  # still waiting: 1 of 1 in use
        slots.total = 2  # raising it lets the waiter in at once
    assert slots.used == 2


async def test_aimd_halves_once_per_round_and_grows_by_one_per_round() -> None:
    limit = AdaptiveLimit("x", ceiling=16, floor=2, notify=_no_notify)
    epoch = limit.epoch
    await limit.overloaded(epoch)
    await limit.overloaded(epoch)  # an echo of the same overload
    assert limit.slots.total == 8
    await limit.overloaded(limit.epoch)
    await limit.overloaded(limit.epoch)
    await limit.overloaded(limit.epoch)
    assert limit.slots.total == 2  # the floor
    for _ in range(3):  # +1/value each: one step up per round of `value` successes
        await limit.succeeded()
    assert limit.slots.total == 3
    for _ in range(4):
        await limit.succeeded()
    assert limit.slots.total == 4


def attempt_times(events: Sequence[Tagged]) -> list[float]:
    return [t.ts for t in events if isinstance(t.event, AttemptStarted)]


def test_a_paced_batch_spends_the_full_bucket_then_keeps_the_pace(recorder: Recorder) -> None:
    jobs, rpm, latency = 300, 120, 2.0
    spec = make_spec(
        [f"q{i}" for i in range(jobs)],
        concurrency=50,
        backends={"sim": {"rpm": rpm, "server_rpm": rpm}},
        sim={"ttft": latency, "tokens_per_s": 0, "reply_tokens": 5},
    )
    result = run_virtual(spec, subscribers=[recorder])
    starts = attempt_times(recorder.events)
    assert result.summary.succeeded == jobs and result.summary.retries == 0  # not one 429
    assert bucket_overdraft(starts, rpm) <= 1e-9
    # The first minute's worth goes out as fast as the 50 slots allow, the rest at the pace.
    assert max_in_window(starts) > rpm + 1
    # Ideal: a full bucket at once, the rest at the refill rate, then the last reply's latency;
    # the burst keeps 2% of the bucket back as a margin.
    ideal = max((jobs - rpm) / rpm * 60, -(-jobs // 50) * latency) + latency
    assert result.summary.wall_s <= ideal * 1.07


def test_burst_none_spaces_every_start_evenly(recorder: Recorder) -> None:
    jobs, rpm, latency = 300, 120, 2.0
    spec = make_spec(
        [f"q{i}" for i in range(jobs)],
        concurrency=50,
        backends={"sim": {"rpm": rpm, "burst": "none", "server_rpm": rpm}},
        sim={"ttft": latency, "tokens_per_s": 0, "reply_tokens": 5},
    )
    result = run_virtual(spec, subscribers=[recorder])
    starts = attempt_times(recorder.events)
    assert result.summary.succeeded == jobs and result.summary.retries == 0
    assert max_in_window(starts) <= rpm + 1
    ideal = max(jobs / rpm * 60, -(-jobs // 50) * latency)
    assert result.summary.wall_s <= ideal * 1.05


def test_token_limits_are_kept_too(recorder: Recorder) -> None:
    # Each request: 1 prompt token + 20 reply tokens = 21; 660 tokens a minute = 31.4 requests.
    spec = make_spec(
        [f"q{i}" for i in range(90)],
        concurrency=20,
        max_tokens=20,
        backends={"sim": {"tpm": 660, "server_tpm": 660}},
        sim={"ttft": 0.5, "tokens_per_s": 0, "reply_tokens": 20},
    )
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.succeeded == 90 and result.summary.retries == 0
    assert bucket_overdraft(attempt_times(recorder.events), 660, cost=21) <= 1e-9


def test_the_batch_adapts_when_the_server_lowers_its_limit(recorder: Recorder) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(500)],
        concurrency=50,
        backends={"sim": {"rpm": 240, "server_rpm": 240, "server_change_at": 20, "server_rpm_after": 60}},
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 3},
    )
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.succeeded == 500
    changes = [t.event for t in recorder.events if isinstance(t.event, LimiterChanged)]
    assert any(c.change == "rpm" and c.value == 60 for c in changes)
    late = [t for t in attempt_times(recorder.events) if t >= 130]  # well after the change
    assert late and bucket_overdraft(late, 60) <= 1e-9
    assert result.summary.retries <= 60  # a burst of 429s at the change, then none


async def test_a_full_bucket_lets_a_minutes_worth_go_at_once_then_paces(autojump_clock: Any) -> None:
    pacer = Pacer("x", rpm=60, tpm=None, notify=_no_notify, burst=60.0)
    start = trio.current_time()
    for _ in range(58):
        await pacer.acquire(1)
    assert trio.current_time() == start  # the bucket (less a 2% margin) at once
    await pacer.acquire(1)
    assert trio.current_time() - start == pytest.approx(0.2)  # then one per second
    await pacer.acquire(1)
    assert trio.current_time() - start == pytest.approx(1.2)


async def test_what_the_server_says_remains_drains_the_bucket(autojump_clock: Any) -> None:
    pacer = Pacer("x", rpm=None, tpm=None, notify=_no_notify, burst=60.0)
    await pacer.observe(RateLimitInfo(requests_limit=60, requests_remaining=5, requests_reset_s=55.0))
    start = trio.current_time()
    for _ in range(3):
        await pacer.acquire(1)
    assert trio.current_time() == start  # what remains, less the margin, goes at once
    await pacer.acquire(1)
    assert trio.current_time() - start == pytest.approx(0.2)  # then the refill rate
    # A server that says more remains than we have spent does not loosen our own count.
    await pacer.observe(RateLimitInfo(requests_limit=60, requests_remaining=60))
    await pacer.acquire(1)
    assert trio.current_time() - start == pytest.approx(1.2)


async def test_a_second_429_within_a_minute_turns_bursting_off(autojump_clock: Any) -> None:
    changes: list[LimiterChanged] = []

    async def notify(change: LimiterChanged) -> None:
        changes.append(change)

    gate = Gate("x", BackendLimits(rpm=60), None, notify)
    ticket = await gate.enter(1, None)
    gate.leave(ticket)
    await gate.failed(ticket, "rate_limited", None, 60.0)
    assert gate.pacer.burst > 0  # one 429 may be bad luck
    await trio.sleep(30)
    await gate.failed(ticket, "overloaded", None, 60.0)
    assert gate.pacer.burst > 0  # an overload is not the rate limit
    await gate.failed(ticket, "rate_limited", None, 60.0)
    assert gate.pacer.burst == 0.0
    assert [(c.change, c.value) for c in changes] == [("burst", 0.0)]
    start = trio.current_time()
    await gate.enter(1, None)
    await gate.enter(1, None)
    assert trio.current_time() - start >= 1.0  # evenly spaced from now on


def test_burst_is_a_name_or_seconds_in_the_job_file() -> None:
    spec = make_spec(["q"], backends={"sim": {"burst": 10}})
    assert spec.limits["sim"].burst_s == 10.0
    with pytest.raises(ConfigError, match=r"backends.sim.burst: expected 'full', 'none' or a number"):
        make_spec(["q"], backends={"sim": {"burst": True}})
    with pytest.raises(ConfigError, match=r"backends.sim.burst: must be <= 60"):
        make_spec(["q"], backends={"sim": {"burst": 61}})


def test_retry_after_pauses_every_worker_of_the_backend(recorder: Recorder) -> None:
    spec = make_spec(
        [{"id": "limited", "prompt": "p", "sim": {"faults": ["rate_limit"], "retry_after": 10.0}}]
        + [{"id": f"other{i}", "prompt": "p", "sim": {"ttft": 3.0}} for i in range(3)],
        concurrency=1,
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 2},
    )
    run_virtual(spec, subscribers=[recorder])
    starts = sorted(attempt_times(recorder.events))
    assert starts[0] == 0.0 and all(t >= 11.0 for t in starts[1:])  # nobody started during the pause
    paused = [
        t.event for t in recorder.events if isinstance(t.event, LimiterChanged) and t.event.change == "paused"
    ]
    assert paused and paused[0].until_s == pytest.approx(11.0)


def test_spend_cap_stops_new_work_exactly_at_the_cap(recorder: Recorder) -> None:
    # Each job: 1 prompt token at $1/M + 10 reply tokens at $5/M = $0.000051.
    per_job = (1 * 1.0 + 10 * 5.0) / 1e6
    spec = make_spec(
        [f"q{i}" for i in range(10)],
        concurrency=1,
        max_cost_usd=per_job * 4.5,
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 10},
    )
    result = run_virtual(spec, subscribers=[recorder])
    summary = result.summary
    assert (summary.succeeded, summary.skipped) == (4, 6)
    assert summary.stopped == "spend cap" and summary.cost_usd == pytest.approx(per_job * 4)
    assert any(isinstance(t.event, LimiterChanged) and t.event.change == "spend_cap" for t in recorder.events)


def test_hard_cap_cancels_running_jobs(recorder: Recorder) -> None:
    per_job = (1 * 1.0 + 10 * 5.0) / 1e6
    spec = make_spec(
        [f"q{i}" for i in range(10)],
        concurrency=3,
        max_cost_usd=per_job * 4.5,
        hard_cap=True,
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 10, "latency_jitter": 0.5},
    )
    summary = run_virtual(spec, subscribers=[recorder]).summary
    assert summary.stopped == "spend cap" and summary.cancelled >= 1
    assert summary.cost_usd <= per_job * 4.5
    assert summary.succeeded + summary.cancelled + summary.skipped == 10


def test_rate_limited_failures_shrink_concurrency(recorder: Recorder) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(40)],
        concurrency=16,
        sim={"ttft": 1.0, "fault_rates": {"overload": 0.3}, "tokens_per_s": 0, "reply_tokens": 2},
    )
    run_virtual(spec, subscribers=[recorder])
    values = [
        t.event.value
        for t in recorder.events
        if isinstance(t.event, LimiterChanged) and t.event.change == "concurrency"
    ]
    assert values and min(values) < 16  # type: ignore[operator]
    assert any(isinstance(t.event, RetryScheduled) for t in recorder.events)


def test_a_retry_after_pause_is_capped_by_max_retry_after(recorder: Recorder) -> None:
    spec = make_spec(
        [{"id": "a", "prompt": "p", "sim": {"faults": ["rate_limit"], "retry_after": 1000.0}}, "other"],
        concurrency=1,
        retry={"max_retry_after": 2.0},
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 2},
    )
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.succeeded == 2 and result.summary.wall_s < 10


def test_the_spend_cap_holds_with_jobs_waiting_at_a_backend_limit(recorder: Recorder) -> None:
    per_job = (1 * 1.0 + 10 * 5.0) / 1e6
    spec = make_spec(
        [f"q{i}" for i in range(20)],
        concurrency=8,
        backends={"sim": {"concurrency": 1}},
        max_cost_usd=per_job * 3.5,
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 10},
    )
    summary = run_virtual(spec, subscribers=[recorder]).summary
    assert summary.succeeded == 3 and summary.cost_usd <= per_job * 3.5


def test_waiting_for_a_backend_slot_does_not_count_against_the_job_timeout(recorder: Recorder) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(4)],
        concurrency=4,
        backends={"sim": {"concurrency": 1}},
        timeouts={"job": 2.5},
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 2},
    )
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.succeeded == 4 and result.summary.wall_s == pytest.approx(4.0)


async def test_jobs_cancelled_while_waiting_at_the_gate_never_started(
    autojump_clock: Any, recorder: Recorder
) -> None:
    spec = make_spec(
        ["a", "b", "c"],
        concurrency=3,
        backends={"sim": {"concurrency": 1}},
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 2},
    )
    control = RunControl()
    async with trio.open_nursery() as nursery:

        async def stop() -> None:
            await trio.sleep(0.5)
            control.cancel("interrupted")

        nursery.start_soon(stop)
        summary = (await execute(spec, subscribers=[recorder], control=control)).summary
    assert (summary.cancelled, summary.skipped, summary.attempts) == (1, 2, 1)


def test_a_backend_limit_below_the_batch_concurrency_is_said_once_at_the_start(recorder: Recorder) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(10)],
        concurrency=8,
        backends={"sim": {"concurrency": 2}},
        sim={"ttft": 1.0, "tokens_per_s": 0, "reply_tokens": 1},
    )
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.succeeded == 10
    changes = [t for t in recorder.events if isinstance(t.event, LimiterChanged)]
    assert [(t.event.backend, t.event.change, t.event.value) for t in changes] == [("sim", "concurrency", 2)]
    assert "fewer than the batch's concurrency 8" in changes[0].event.reason
    assert recorder.events.index(changes[0]) < min(
        i for i, t in enumerate(recorder.events) if isinstance(t.event, AttemptStarted)
    )


@pytest.mark.parametrize("jobs, own", [(10, 8), (2, 2), (10, None)])
def test_a_backend_limit_that_holds_nothing_back_is_not_mentioned(
    recorder: Recorder, jobs: int, own: int | None
) -> None:
    spec = make_spec(
        [f"q{i}" for i in range(jobs)],
        concurrency=8,
        backends={"sim": {"concurrency": own}},
        sim={"ttft": 0.1},
    )
    run_virtual(spec, subscribers=[recorder])
    assert not any(isinstance(t.event, LimiterChanged) for t in recorder.events)
