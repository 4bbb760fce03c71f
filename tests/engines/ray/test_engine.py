"""The Ray engine runs a batch as the local engine does, and loses no job when a worker dies; a
backend's rate limit holds where requests start, across workers; an attempt the driver gives up
on stops on its worker, its process with it. (One module, one Ray instance: in one test process,
a Ray started after two others were shut down has been seen failing to start its GCS, with
``authentication_token_loader.cc: Check failed: has_token``.)"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator.api import run_batch
from orchestrator.engines.ray import RayEngine
from orchestrator.errors import ConfigError, ErrorKind
from orchestrator.events import AttemptStarted, BatchSummary, JobSucceeded, RetryScheduled, Tagged
from orchestrator.run.batch import BatchResult, execute
from orchestrator.run.bus import CallbackSubscriber
from orchestrator.run.control import RunControl
from orchestrator.testing.openai.server import RateLimits, RecordedRequest, Reply, Response, open_fake_openai
from orchestrator.testing.ray import processes_marked, shard_workers
from tests.helpers import job_ends, make_spec

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_instance")]

QUERIES = [{"id": f"job-{i}", "prompt": f"question {i}"} for i in range(40)]
FAST_RETRIES = {"base_delay": 0.01, "max_delay": 0.05}
FAULTY_SIM = {
    "ttft": 0.02,
    "tokens_per_s": 2000.0,
    "fault_rates": {"server_error": 0.25, "mid_stream": 0.1, "fatal": 0.05},
}


def outcomes(result: BatchResult) -> dict[str, tuple[Any, ...]]:
    return {
        job_id: (job.status, job.attempts, job.text, job.error_kind, job.tokens)
        for job_id, job in result.jobs.items()
    }


def counts(summary: BatchSummary) -> tuple[Any, ...]:
    return (
        summary.jobs,
        summary.succeeded,
        summary.failed,
        summary.attempts,
        summary.retries,
        summary.tokens,
        round(summary.cost_usd, 9),
        dict(summary.failures),
        summary.stopped,
    )


def assert_seq_gap_free_and_one_end_per_job(events: list[Tagged], job_ids: list[str]) -> None:
    seqs: dict[str, list[int]] = {}
    for tagged in events:
        if tagged.job_id is not None:
            seqs.setdefault(tagged.job_id, []).append(tagged.seq)
    assert all(seq == list(range(len(seq))) for seq in seqs.values())
    assert all(len(ends) == 1 for ends in job_ends(events, job_ids).values())


def test_a_batch_ends_as_on_the_local_engine_with_the_same_seed() -> None:
    keywords: dict[str, Any] = {
        "backend": "sim",
        "concurrency": 16,
        "seed": 7,
        "options": FAULTY_SIM,
        "retry": FAST_RETRIES,
    }
    local = run_batch(QUERIES, **keywords)
    events: list[Tagged] = []
    remote = run_batch(QUERIES, engine="ray", on_event=events.append, **keywords)
    assert outcomes(remote) == outcomes(local)
    assert counts(remote.summary) == counts(local.summary)
    assert local.summary.retries > 0 and local.summary.failed > 0  # the faults were exercised
    assert_seq_gap_free_and_one_end_per_job(events, [q["id"] for q in QUERIES])


async def test_a_killed_worker_sends_its_unfinished_jobs_back_to_the_queue(ray_instance: str) -> None:
    spec = make_spec(
        [{"id": f"job-{i}", "prompt": f"question {i}"} for i in range(24)],
        concurrency=16,
        sim={"ttft": 1.0},
        retry=FAST_RETRIES,
    )
    events: list[Tagged] = []
    killed: list[int] = []

    def started() -> int:
        return sum(isinstance(t.event, AttemptStarted) for t in events)

    async def kill_one_shard_worker() -> None:
        # Mid-shard: every slot's attempt has started (they answer after 1 s), so whichever
        # shard's worker dies has attempts running; a fixed wait after the worker appears may
        # come before them on a busy machine. A worker killed before it runs its task is not a
        # lost shard: Ray may hand the task to another worker.
        while started() < spec.concurrency or not shard_workers(ray_instance):  # noqa: ASYNC110
            await trio.sleep(0.02)
        pid = shard_workers(ray_instance)[0]
        os.kill(pid, signal.SIGKILL)  # one shard's worker, found by its title
        killed.append(pid)

    with trio.fail_after(30):  # the shards of earlier tests have ended (their workers winding down)
        while shard_workers(ray_instance):  # noqa: ASYNC110 (polling /proc: nothing to wait on)
            await trio.sleep(0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kill_one_shard_worker)
        result = await execute(spec, subscribers=[CallbackSubscriber(events.append)], engine=RayEngine())
        nursery.cancel_scope.cancel()
    assert killed
    lost = {t.job_id for t in events if isinstance(t.event, RetryScheduled)}
    assert lost and all(
        t.event.error_kind is ErrorKind.WORKER_LOST for t in events if isinstance(t.event, RetryScheduled)
    )
    assert result.summary.succeeded == 24  # 0 lost
    successes = [t.job_id for t in events if isinstance(t.event, JobSucceeded)]
    assert sorted(successes) == sorted(job.id for job in spec.jobs)  # 0 duplicated
    assert all(result.jobs[job].attempts == 2 for job in lost)
    streams = [(t.job_id, t.attempt) for t in events if t.event.kind == "session_started"]
    assert len(streams) == len(set(streams)) == 24  # no stream replayed, none of a lost attempt
    assert_seq_gap_free_and_one_end_per_job(events, [job.id for job in spec.jobs])


def test_the_ray_client_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match=r"ray://.*cannot stream"):
        RayEngine("ray://head:10001")


async def test_a_stop_cancels_every_shard_on_a_cluster_it_joined(ray_instance: str) -> None:
    spec = make_spec(
        [{"id": f"job-{i}", "prompt": f"q {i}"} for i in range(16)], concurrency=16, sim={"ttft": 600}
    )
    control = RunControl()
    events: list[Tagged] = []

    async def stop_once_shards_run() -> None:
        while not shard_workers(ray_instance):  # noqa: ASYNC110 (polling /proc: nothing to wait on)
            await trio.sleep(0.02)
        control.cancel("interrupted")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_once_shards_run)
        result = await execute(
            spec, subscribers=[CallbackSubscriber(events.append)], control=control, engine=RayEngine()
        )
    assert result.summary.stopped == "interrupted"
    assert all(len(ends) == 1 for ends in job_ends(events, [job.id for job in spec.jobs]).values())
    with trio.fail_after(30):  # the cluster stays up; the shards on it do not
        while shard_workers(ray_instance):  # noqa: ASYNC110
            await trio.sleep(0.1)


RPM = 1200  # 20 starts a second, evenly spaced ("burst": "none")
WINDOW = 0.5  # so 10 starts in any half second...
# ...and two more: these are arrival times, and a start held up on its way (two worker
# processes and the server share two cores) may land in a window with the next ones.
JITTER = 2


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
