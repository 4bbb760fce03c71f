"""The simulator's planning (pure, seeded) and its shared clock (exact on the virtual clock)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends.sim.backend import SimClock, _Draws, plan_attempt
from tests.helpers import make_spec, wait_for

ROOT = Path(__file__).resolve().parents[3]
keys = st.tuples(st.integers(), st.text(max_size=8), st.integers(0, 10))


@given(key=keys, low=st.integers(-5, 5), span=st.integers(0, 50))
def test_draws_are_a_function_of_the_key_and_stay_in_range(
    key: tuple[int, str, int], low: int, span: int
) -> None:
    a, b = _Draws(*key), _Draws(*key)
    values = [a.random() for _ in range(20)]  # more than one hash block
    assert values == [b.random() for _ in range(20)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert low <= a.randint(low, low + span) <= low + span


def test_draws_of_different_keys_differ_and_look_uniform() -> None:
    assert _Draws(0, "a").random() != _Draws(0, "b").random()
    draws = _Draws(7, "spread")
    counts = [0] * 10
    for _ in range(10_000):
        counts[int(draws.random() * 10)] += 1
    assert all(900 < c < 1100 for c in counts)  # ~6 standard deviations either side


def _job(**sim: Any) -> Any:
    return make_spec([{"id": "j", "prompt": "a prompt of some length"}], sim=sim).jobs[0]


def test_a_plan_is_the_same_for_the_same_seed_and_the_reply_the_same_on_every_attempt() -> None:
    job = _job(reply_tokens=5, reply_tokens_max=30, latency_jitter=0.5)
    first = plan_attempt(job, job.options, 1, seed=3)
    assert plan_attempt(job, job.options, 1, seed=3) == first
    assert plan_attempt(job, job.options, 2, seed=3).tokens == first.tokens  # a retry says the same
    assert plan_attempt(job, job.options, 1, seed=4).tokens != first.tokens
    assert 5 <= len(first.tokens) <= 30
    assert 0.15 <= first.ttft <= 0.45  # 0.3 s scaled by at most +-50%


def test_fault_rates_of_zero_and_one_are_never_and_always() -> None:
    never = _job(fault_rates={"overload": 0.0})
    always = _job(fault_rates={"server_error": 1.0})
    for attempt in range(1, 20):
        assert plan_attempt(never, never.options, attempt, seed=0).fault is None
        assert plan_attempt(always, always.options, attempt, seed=0).fault == "server_error"


async def test_the_clock_wakes_each_sleeper_exactly_on_time_and_drops_cancelled_ones(
    autojump_clock: Any,
) -> None:
    clock = SimClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        start = trio.current_time()
        await clock.sleep(seconds)
        woke.append((name, trio.current_time() - start))

    async with trio.open_nursery() as outer:
        outer.start_soon(clock.run)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, "late", 2.0)
            nursery.start_soon(sleeper, "early", 0.5)
            with trio.move_on_after(1.0):
                await clock.sleep(5.0)  # cancelled: its wake-up must not fire later
        outer.cancel_scope.cancel()
    assert sorted(woke) == [("early", 0.5), ("late", 2.0)]


def test_a_plan_knows_whether_playing_it_back_waits() -> None:
    def waits(**sim: Any) -> bool:
        job = _job(**sim)
        return plan_attempt(job, job.options, 1, seed=0).waits

    assert waits(ttft=0.1, tokens_per_s=0, reply_tokens=1)
    assert not waits(ttft=0, tokens_per_s=0, reply_tokens=5)  # no pause anywhere
    assert not waits(ttft=0, tokens_per_s=10, reply_tokens=1)  # one token: no gap between two
    assert waits(ttft=0, tokens_per_s=10, reply_tokens=2)
    assert waits(ttft=0, tokens_per_s=10, reply_tokens=1, tool_calls=1)  # a pause after the call


def test_a_reply_is_made_as_it_is_played_back() -> None:
    job = _job(reply_tokens=10**10)
    tokens = plan_attempt(job, job.options, 1, seed=0).tokens  # returns at once: nothing drawn yet
    assert len(tokens) == 10**10
    first = list(itertools.islice(tokens, 3))
    assert not first[0].startswith(" ") and all(t.startswith(" ") for t in first[1:])
    short = _job(reply_tokens=3)
    assert list(plan_attempt(short, short.options, 1, seed=0).tokens) == first  # the same draws


def test_an_endless_stream_that_never_sleeps_stops_on_sigterm(tmp_path: Path) -> None:
    job = tmp_path / "endless.toml"
    job.write_text(
        "[defaults.sim]\nttft = 0\ntokens_per_s = 0\nreply_tokens = 10_000_000_000\n[[jobs]]\nprompt = 'x'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", str(job), "--log", str(log), "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Into the reply: by then the run watches for signals (a SIGTERM during start-up kills it
    # outright, with -15 instead of 143).
    wait_for(lambda: log.exists() and b"text_delta" in log.read_bytes())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)  # a hang guard, not a timing bound
    assert proc.returncode == 143, err
    assert b"0/1 succeeded" in out and b"Traceback" not in err
