"""The Ray engine runs a batch as the local engine does, and loses no job when a worker dies."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import trio

from orchestrator.api import run_batch
from orchestrator.engines.ray import RayEngine
from orchestrator.errors import ConfigError, ErrorKind
from orchestrator.events import BatchSummary, JobSucceeded, RetryScheduled, Tagged
from orchestrator.run.bus import CallbackSubscriber
from orchestrator.run.runner import BatchResult, RunControl, execute
from orchestrator.testing.ray import shard_workers
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

    async def kill_one_shard_worker() -> None:
        while not shard_workers(ray_instance):  # noqa: ASYNC110 (polling /proc: nothing to wait on)
            await trio.sleep(0.02)
        # Mid-shard: its attempts are running (they answer after 1 s). A worker killed before it
        # runs its task is not a lost shard: Ray may hand the task to another worker.
        await trio.sleep(0.3)
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
