"""The Ray engine: the same batch, its attempts run on a Ray cluster (``--engine ray``).

The driver (this process) keeps the job queue, retries, limits, the spend cap, halts, resume
and the log; Ray workers only stream attempts (:mod:`.shard`), gathered into micro-shards and
pumped back into the runner (:mod:`.driver`). Importing this module does not import Ray; opening
the engine does.

Without an address the engine starts a Ray instance of its own for the run (2 CPUs, its
workers on this machine) and stops it after; with one (``auto`` or ``HOST:PORT``, a cluster's
GCS address) it joins that cluster and leaves it running. The Ray Client (``ray://``) cannot
stream generator results, so it is refused. Nodes offer attempt slots as the custom resource
``llm_slots`` (:mod:`.slots`: for ``claude-code``, by memory); a shard takes one slot per
attempt. Each backend gets a desk on the cluster for the run (:mod:`.desk`), where attempts ask
for start permits and hear when the driver gave up on them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from orchestrator.backends import Backend, BackendKind
from orchestrator.diagnostics import logger
from orchestrator.engines.ray.slots import SLOTS, available_memory, memory_per_attempt, node_slots
from orchestrator.errors import ConfigError
from orchestrator.spec import BackendLimits, BatchSpec

SHARD_SIZE = (8, 32)  # the fewest and most attempts a shard holds
LOCAL_CPUS = 2
_OBJECT_STORE_BYTES = 128 * 1024 * 1024  # shards' batches are small; do not reserve RAM for more
_log = logger("orchestrator.engines.ray")


def check_address(address: str | None) -> None:
    """Raise ConfigError for an address the engine cannot use."""
    if address is not None and address.startswith("ray://"):
        raise ConfigError(
            [
                f"--address {address}: the Ray Client (ray://) cannot stream results; give the "
                "cluster's GCS address (HOST:6379 or auto) and run the driver on a cluster node "
                "(ray job submit -- orchestrate ...)"
            ]
        )


def shard_size(concurrency: int, node_slots: float) -> int:
    """Attempts per shard: about a quarter of the batch's concurrency, within ``SHARD_SIZE``,
    and never more than the largest node's slots (a shard runs on one node)."""
    low, high = SHARD_SIZE
    return max(1, min(high, max(low, concurrency // 4), int(node_slots)))


class RayEngine:
    """Runs attempts on Ray; see the module docstring."""

    def __init__(self, address: str | None = None) -> None:
        if importlib.util.find_spec("ray") is None:  # found without importing it
            raise ConfigError(["--engine ray: Ray is not installed: pip install 'orchestrator-llm[ray]'"])
        check_address(address)
        self.address = address
        self.shards_submitted = 0

    @asynccontextmanager
    async def open_backends(
        self, spec: BatchSpec, kinds: Mapping[str, BackendKind]
    ) -> AsyncIterator[Mapping[str, Backend]]:
        from orchestrator.engines.ray.driver import (
            GATHER_SECONDS,
            PACED_GATHER_SECONDS,
            RemoteBackend,
            ShardBatcher,
        )

        own = await trio.to_thread.run_sync(self._connect, spec.concurrency, kinds)
        try:
            largest, total_slots = await trio.to_thread.run_sync(_slots)
            if total_slots < spec.concurrency:  # the rest would wait in Ray's queue, their clocks running
                _log.warning(
                    "the cluster has fewer slots than --concurrency",
                    slots=total_slots,
                    concurrency=spec.concurrency,
                )
            if largest < 1:
                raise ConfigError(
                    [
                        f"the Ray cluster offers no {SLOTS}: start its nodes with "
                        f"ray start --resources='{{\"{SLOTS}\": 64}}'"
                    ]
                )
            settings = {name: spec.backends.get(name) or kind.Settings() for name, kind in kinds.items()}
            size = shard_size(spec.concurrency, largest)
            async with AsyncExitStack() as stack:
                # Opened for its estimates (spend cap, pacing); it streams nothing here.
                locals_ = {
                    name: await stack.enter_async_context(kind.open(settings[name], seed=spec.seed))
                    for name, kind in kinds.items()
                }
                refunds = {name: getattr(b, "refunds_unused_tokens", True) for name, b in locals_.items()}
                desks = await trio.to_thread.run_sync(_open_desks, spec, refunds)
                try:
                    paced = frozenset(name for name in kinds if _paced(spec.limits.get(name)))
                    batcher = ShardBatcher(
                        settings,
                        spec.seed,
                        size,
                        max_shards=spec.concurrency,
                        desks=desks,
                        gather=PACED_GATHER_SECONDS if paced else GATHER_SECONDS,
                        paced=paced,
                    )
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(batcher.run)
                        try:
                            yield {name: RemoteBackend(batcher, local) for name, local in locals_.items()}
                        finally:
                            await batcher.wind_down()
                            nursery.cancel_scope.cancel()
                            self.shards_submitted = batcher.shards_submitted
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(_close_desks, desks)
        finally:
            if own:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_shutdown)

    def _connect(self, concurrency: int, kinds: Mapping[str, BackendKind]) -> bool:
        """Join the cluster, or start a local instance (its slots: :mod:`.slots`, at most
        ``concurrency``); True when this run started Ray (and stops it). Ray's usage statistics
        stay off unless the user turned them on."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        if ray.is_initialized():
            return False
        slots = node_slots(memory_per_attempt(kinds.values()), available_memory(), concurrency)
        try:
            if self.address is None:
                ray.init(
                    address="local",  # a new instance, even if a cluster runs on this machine
                    num_cpus=LOCAL_CPUS,
                    resources={SLOTS: slots},
                    object_store_memory=_OBJECT_STORE_BYTES,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,  # its notices would interleave with our progress
                )
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.ERROR)
        except ConnectionError as exc:
            raise ConfigError([f"--address {self.address}: cannot join the Ray cluster: {exc}"]) from None
        return True


def _slots() -> tuple[float, float]:
    """The largest node's slots and the cluster's total."""
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    slots = [node["Resources"].get(SLOTS, 0.0) for node in nodes if node["Alive"]]
    return max(slots, default=0.0), sum(slots)


def _paced(limits: BackendLimits | None) -> bool:
    """Whether the backend's attempts are paced from the start (its configured rates)."""
    return limits is not None and bool(limits.rpm or limits.tpm or limits.models)


def _open_desks(spec: BatchSpec, refunds: Mapping[str, bool]) -> dict[str, Any]:
    """A desk (:mod:`.desk`) per backend, running before the batch starts."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from orchestrator.engines.ray.desk import BackendDesk

    actor: Any = ray.remote(BackendDesk).options(
        num_cpus=0,
        max_restarts=0,
        # Every shard in flight keeps a call waiting on its desk and may ask for permits at once.
        max_concurrency=max(1000, 4 * spec.concurrency),
        # On the driver's node: the run lives and dies with it anyway, unlike any other node.
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        ),
    )
    desks = {
        name: actor.remote(name, spec.limits.get(name, BackendLimits()), refund)
        for name, refund in refunds.items()
    }
    try:
        ray.get([desk.ready.remote() for desk in desks.values()])
    except BaseException:
        _close_desks(desks)
        raise
    return desks


def _close_desks(desks: Mapping[str, Any]) -> None:
    import ray

    for desk in desks.values():
        ray.kill(desk)


def _shutdown() -> None:
    import ray

    ray.shutdown()
