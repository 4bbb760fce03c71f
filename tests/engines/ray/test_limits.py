"""On the Ray engine a backend's rate limit holds where requests start, across workers, and an
attempt the driver gives up on stops on its worker, its process with it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import trio

from orchestrator.engines.ray import RayEngine
from orchestrator.run.runner import execute
from orchestrator.testing.openai.server import RateLimits, RecordedRequest, Reply, Response, open_fake_openai
from orchestrator.testing.ray import processes_marked, shard_workers
from tests.helpers import make_spec

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_instance")]

RPM = 1200  # 20 starts a second, evenly spaced ("burst": "none")
WINDOW = 0.5  # so 10 starts in any half second...
JITTER = 1  # ...and one more: a start a few ms late on its way may share a window with the next


async def test_a_rate_limit_holds_where_requests_start_across_two_workers(ray_instance: str) -> None:
    starts: list[float] = []
    workers: set[int] = set()

    def answer(request: RecordedRequest) -> Response:
        starts.append(trio.current_time())  # when the request reached the server
        return Reply("fine thanks", prompt_tokens=3, delay=0.4)

    async def note_workers() -> None:
        while True:
            workers.update(shard_workers(ray_instance))
            await trio.sleep(0.05)

    # The server meters too, with a bucket of a quarter second's worth (5 requests): a bunch of
    # starts gets 429s, and the batch retries.
    async with open_fake_openai(default=answer, limits=RateLimits(rpm=RPM, window=0.25)) as fake:
        settings = {"base_url": fake.base_url, "rpm": RPM, "burst": "none", "api_key_required": False}
        spec = make_spec(
            [f"question {i}" for i in range(40)],
            backend="openai",
            model="gpt-4o",
            max_tokens=8,
            concurrency=16,
            backends={"openai": settings},
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(note_workers)
            result = await execute(spec, engine=RayEngine())
            nursery.cancel_scope.cancel()
    assert result.summary.succeeded == 40 and result.summary.retries == 0
    assert fake.meter is not None and fake.meter.refused == 0
    assert len(workers) >= 2  # the starts came from more than one worker process
    most = max(sum(1 for t in starts if start <= t < start + WINDOW) for start in starts)
    assert most <= RPM / 60 * WINDOW + JITTER, sorted(round(t - starts[0], 3) for t in starts)


def fake_cli(directory: Path) -> Path:
    """A Claude Code CLI that says nothing for ten minutes (its version unreadable, so tried)."""
    path = directory / "silent-claude"
    path.write_text('#!/bin/sh\n[ "$1" = --version ] && exit 0\nsleep 600\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_an_attempt_the_driver_gives_up_on_stops_on_its_worker(
    ray_instance: str, tmp_path: Path
) -> None:
    cli = fake_cli(tmp_path)
    spec = make_spec(
        [
            {"id": "agent", "prompt": "wait", "backend": "claude-code"},
            {"id": "slow", "prompt": "wait", "sim": {"ttft": 600}},
        ],
        concurrency=2,
        timeouts={"job": 2.0},  # no attempt timeout: nothing on the worker would end them
        backends={"claude-code": {"cli": str(cli)}},
    )

    def silent_clis() -> list[int]:
        return [pid for pid, cmdline in processes_marked(ray_instance) if "sleep 600" in cmdline]

    result = await execute(spec, engine=RayEngine())
    assert {job.status for job in result.jobs.values()} == {"failed"}
    assert {job.error_kind for job in result.jobs.values()} == {"timeout_job"}
    # The run waited for its shards to stop them: a moment later nothing of theirs is left
    # (without a stop from the driver they would run for ten minutes; killed, the CLI's child
    # would be left for ever).
    with trio.fail_after(10):
        while shard_workers(ray_instance) or silent_clis():  # noqa: ASYNC110 (polling /proc)
            await trio.sleep(0.05)
