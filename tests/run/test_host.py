"""Hosting a batch: under asyncio (a trio guest run), inside a running loop, and Ctrl-C in the library.

pytest-trio runs async tests on trio, so the asyncio tests are plain tests that call
``asyncio.run`` themselves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import ConfigError, open_batch, run_batch, run_batch_async
from orchestrator.events import (
    AttemptStarted,
    JobCancelled,
    JobQueued,
    JobSkipped,
    JobsSkipped,
    JobSucceeded,
    Tagged,
    TerminalEvent,
    TextDelta,
)
from orchestrator.record.log import read_log
from tests.helpers import as_logged

REPO = Path(__file__).resolve().parents[2]
FAST = {"ttft": 0.01, "tokens_per_s": 0}


def _logged(path: Path) -> list[Tagged]:
    return [record.tagged for record in read_log(path) if record.tagged is not None]


def test_run_batch_async_runs_a_batch_on_the_asyncio_loop(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:  # the asyncio loop keeps running while the batch does
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticking = asyncio.ensure_future(ticker())
        result = await run_batch_async(
            ["a", "b", "c"], backend="sim", options={"ttft": 0.1}, log=str(tmp_path / "a.jsonl")
        )
        ticking.cancel()
        return result.summary.succeeded, ticks

    succeeded, ticks = asyncio.run(main())
    assert succeeded == 3
    assert ticks > 5


def test_open_batch_under_asyncio_yields_every_event_in_per_job_order(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"

    async def main() -> tuple[list[Tagged], int]:
        seen: list[Tagged] = []
        async with open_batch(
            [f"q{i}" for i in range(20)], backend="sim", buffer=3, options=FAST, log=str(log)
        ) as batch:
            async for tagged in batch:
                seen.append(tagged)
                await asyncio.sleep(0)  # a slow reader: the bus waits for room
        assert batch.result is not None
        return seen, batch.result.summary.succeeded

    seen, succeeded = asyncio.run(main())
    assert succeeded == 20
    # nothing dropped, nothing reordered (the log writes runs of deltas as one line)
    assert as_logged(seen) == as_logged(_logged(log))
    assert sum(isinstance(t.event, JobSucceeded) for t in seen) == 20


def test_wait_under_asyncio_stops_listening_and_returns_the_result() -> None:
    async def main() -> int:
        async with open_batch([f"q{i}" for i in range(30)], backend="sim", buffer=2, options=FAST) as batch:
            result = await batch.wait()  # nobody reads: the batch must still finish
        return result.summary.succeeded

    assert asyncio.run(main()) == 30


def test_batch_cancel_under_asyncio_stops_gracefully(tmp_path: Path) -> None:
    log = tmp_path / "cancel.jsonl"

    async def main() -> str | None:
        async with open_batch(
            ["x", "y", "z"], backend="sim", concurrency=1, options={"tokens_per_s": 2}, log=str(log)
        ) as batch:
            async for tagged in batch:
                if isinstance(tagged.event, TextDelta):
                    batch.cancel()
        assert batch.result is not None
        return batch.result.summary.stopped

    assert asyncio.run(main()) == "cancelled"
    events = [t.event for t in _logged(log)]
    terminal = [e for e in events if isinstance(e, TerminalEvent)]
    assert [type(e).__name__ for e in terminal] == ["JobCancelled"]
    # The two that never started end together, in one batch-level jobs_skipped.
    assert [(e.count, e.reason) for e in events if isinstance(e, JobsSkipped)] == [(2, "cancelled")]


def test_cancelling_the_awaiting_task_stops_the_batch_and_logs_its_end(tmp_path: Path) -> None:
    log = tmp_path / "task.jsonl"

    async def main() -> None:
        started: set[str | None] = set()
        both_started = asyncio.Event()

        def on_event(tagged: Tagged) -> None:
            if isinstance(tagged.event, AttemptStarted):
                started.add(tagged.job_id)
                if len(started) == 2:
                    both_started.set()

        task = asyncio.ensure_future(
            run_batch_async(
                ["slow", "slower"],
                backend="sim",
                options={"tokens_per_s": 1},
                log=str(log),
                on_event=on_event,
            )
        )
        # Both under way (not a fixed wait, which a slow start could outlast): both end cancelled.
        await asyncio.wait_for(both_started.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    events = [t.event for t in _logged(log)]
    assert sum(isinstance(e, JobCancelled | JobSkipped) for e in events) == 2
    assert events[-1].kind == "batch_finished"


def test_run_batch_inside_a_running_loop_says_what_to_use_instead() -> None:
    async def main() -> None:
        run_batch(["x"], backend="sim")

    with pytest.raises(
        RuntimeError, match=r"use `await run_batch_async\(\.\.\.\)` or `async with open_batch"
    ):
        asyncio.run(main())


def test_a_log_that_cannot_be_opened_is_a_plain_config_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    log = str(tmp_path / "a-file" / "x.jsonl")
    with pytest.raises(ConfigError, match="cannot open log"):
        run_batch(["x"], backend="sim", log=log)

    async def main() -> None:
        await run_batch_async(["x"], backend="sim", log=log)

    with pytest.raises(ConfigError, match="cannot open log"):
        asyncio.run(main())


def test_run_batch_needs_a_backend() -> None:
    with pytest.raises(ConfigError) as info:
        run_batch(["x"])
    assert info.value.problems == [
        "run_batch(backend=...): required: 'local' (a small model on your CPU, offline), 'anthropic', "
        "'openai' or 'claude-code' ('sim' is a simulator: made-up answers and costs)"
    ]


def test_queries_that_name_their_backend_need_no_default() -> None:
    result = run_batch([{"prompt": "x", "backend": "sim", "sim": FAST}])
    assert result.ok
    with pytest.raises(
        ConfigError, match=r"run_batch\(options=\.\.\.\): one backend's per-job options: pass backend= too"
    ):
        run_batch([{"prompt": "x", "backend": "sim"}], options=FAST)


def test_the_simulator_says_so_in_its_model_name_and_the_summary() -> None:
    seen: list[Tagged] = []
    result = run_batch(["x"], backend="sim", model="gpt-4o", options=FAST, on_event=seen.append)
    models = [t.event.model for t in seen if t.event.kind == "session_started"]  # type: ignore[union-attr]
    assert models == ["gpt-4o (simulated)"]
    assert result.summary.simulated_jobs == 1 and result.summary.simulated


def test_run_batch_handles_sigint_during_the_call_only() -> None:
    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGINT, mine)
    try:
        during: list[object] = []
        run_batch(["x"], backend="sim", options=FAST, on_event=lambda _: during.append(signal.getsignal(2)))
        assert during and mine not in during
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        seen: list[object] = []
        run_batch(["x"], backend="sim", options=FAST, on_event=lambda _: seen.append(signal.getsignal(2)))
        assert set(seen) == {signal.SIG_IGN}
    finally:
        signal.signal(signal.SIGINT, previous)


SCRIPT = """
import asyncio
import sys
from orchestrator import run_batch, run_batch_async


def streaming(tagged):
    if tagged.event.kind == "text_delta":
        print("streaming", flush=True)


queries = ["a", "b", "c", "d"]
settings = dict(
    backend="sim", concurrency=2, options={"tokens_per_s": 2}, log=sys.argv[1], on_event=streaming
)
try:
    if sys.argv[2] == "run_batch":
        run_batch(queries, **settings)
    else:
        asyncio.run(run_batch_async(queries, **settings))
except KeyboardInterrupt as exc:
    print("plain KeyboardInterrupt" if type(exc) is KeyboardInterrupt else type(exc).__name__, flush=True)
    raise
"""


@pytest.mark.slow
@pytest.mark.parametrize("call", ["run_batch", "run_batch_async"])
def test_ctrl_c_ends_the_batch_gracefully_then_raises_keyboard_interrupt(tmp_path: Path, call: str) -> None:
    log = tmp_path / "interrupted.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(log), call],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "streaming":
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert "plain KeyboardInterrupt" in out
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt"
    assert "ExceptionGroup" not in err
    events = [t.event for t in _logged(log)]
    assert sum(isinstance(e, JobQueued) for e in events) == 4
    assert sum(isinstance(e, JobCancelled) for e in events) == 2
    assert sum(e.count for e in events if isinstance(e, JobsSkipped)) == 2
    assert events[-1].kind == "batch_finished"
    assert events[-1].summary.stopped == "interrupted"  # type: ignore[union-attr]
