"""The worker side, without Ray: a shard runs each attempt once and ends each with its outcome."""

from __future__ import annotations

import threading
import time

from orchestrator.backends.sim.backend import Settings
from orchestrator.engines.ray.shard import AttemptEnded, ShardAttempt, run_shard
from orchestrator.errors import ErrorKind
from orchestrator.events import StreamFinished
from tests.helpers import make_spec


def shard_of(*sims: dict[str, object]) -> list[ShardAttempt]:
    spec = make_spec([{"id": f"job-{i}", "prompt": f"q {i}", "sim": sim} for i, sim in enumerate(sims)])
    return [ShardAttempt(i, job, 1) for i, job in enumerate(spec.jobs)]


def test_each_attempt_streams_once_and_ends_with_its_outcome() -> None:
    attempts = shard_of(
        {"ttft": 0}, {"ttft": 0, "faults": ["server_error"]}, {"ttft": 0, "faults": ["fatal"]}
    )
    messages = [m for batch in run_shard({"sim": Settings()}, 1, attempts) for m in batch]
    ends = {key: m for key, m in messages if isinstance(m, AttemptEnded)}
    assert ends[0].failure is None
    assert ends[1].failure is not None and ends[1].failure.retryable
    assert ends[2].failure is not None and not ends[2].failure.retryable
    assert ends[1].failure.kind is ErrorKind.SERVER_ERROR
    for key in ends:
        mine = [m for k, m in messages if k == key]
        assert mine[-1] is ends[key]  # nothing after the end, and exactly one end
        assert sum(isinstance(m, AttemptEnded) for m in mine) == 1
    assert any(isinstance(m, StreamFinished) for k, m in messages if k == 0)


def test_closing_the_shard_early_cancels_its_attempts_and_ends_its_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    shard = run_shard({"sim": Settings()}, 1, shard_of({"ttft": 0, "faults": ["stall"]}))
    first = next(shard)  # the stalled attempt's first events
    assert first
    shard.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        t.name == "orchestrator-shard" and t.ident not in before for t in threading.enumerate()
    ):
        time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name == "orchestrator-shard" and t.ident not in before]
