"""A two-node loopback Ray cluster: a node removed mid-run loses no job and duplicates none."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from orchestrator.engines.ray import RayEngine
from orchestrator.errors import ErrorKind
from orchestrator.events import JobSucceeded, RetryScheduled, Tagged
from orchestrator.run.batch import execute
from orchestrator.run.bus import CallbackSubscriber
from orchestrator.testing.ray import loopback_env, runs_a_shard
from tests.helpers import make_spec

pytestmark = pytest.mark.ray
NODE_SLOTS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A head node and one more node, each with ``NODE_SLOTS`` slots, the driver joined to it."""
    import ray
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as env:
        for key, value in loopback_env(tmp_path_factory.mktemp("home"), uuid.uuid4().hex).items():
            env.setenv(key, value)
        node = {
            "num_cpus": 1,
            "resources": {"llm_slots": NODE_SLOTS},
            "object_store_memory": 80 * 1024 * 1024,
        }
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        try:
            cluster.add_node(**node)
            ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
            cluster.wait_for_nodes()
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


async def test_a_node_removed_mid_run_sends_its_jobs_back_to_the_queue(cluster: Any) -> None:
    spec = make_spec(
        [{"id": f"job-{i}", "prompt": f"question {i}"} for i in range(2 * NODE_SLOTS)],
        concurrency=2 * NODE_SLOTS,
        sim={"ttft": 2.0},
        retry={"base_delay": 0.01, "max_delay": 0.05},
    )
    events: list[Tagged] = []
    other = next(node for node in cluster.list_all_nodes() if node is not cluster.head_node)

    raylet = other.all_processes["raylet"][0].process.pid

    async def remove_the_other_node() -> None:
        while not runs_a_shard(raylet):  # noqa: ASYNC110 (polling /proc: nothing to wait on)
            await trio.sleep(0.02)
        await trio.to_thread.run_sync(cluster.remove_node, other)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(remove_the_other_node)
        result = await execute(spec, subscribers=[CallbackSubscriber(events.append)], engine=RayEngine())
    retried = [t for t in events if isinstance(t.event, RetryScheduled)]
    assert retried and all(t.event.error_kind is ErrorKind.WORKER_LOST for t in retried)
    assert result.summary.succeeded == len(spec.jobs)  # 0 lost
    successes = sorted(t.job_id for t in events if isinstance(t.event, JobSucceeded))
    assert successes == sorted(job.id for job in spec.jobs)  # 0 duplicated
