"""Where a batch's attempts run: in this process (the local engine) or on a cluster.

The runner (:mod:`orchestrator.run.runner`) keeps everything that decides a job's life — the
queue, retries, the spend cap, limits, halts, the log — and asks its engine for one thing only:
the opened backends its attempts stream through. The local engine opens the real backends in
this process. The Ray engine (:mod:`orchestrator.engines.ray`, imported only when asked for)
gives backends whose ``stream`` ships the attempt to a worker and plays its events back here,
so every event still passes the runner's ``emit`` (tagging, seq, watchdog, limits) and the
driver's log stays the single source of truth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Protocol

from orchestrator.backends import Backend, BackendKind
from orchestrator.spec import BatchSpec

ENGINES = ("local", "ray")


class Engine(Protocol):
    """Opens the backends of one batch run, and closes them (and whatever it started) after."""

    def open_backends(
        self, spec: BatchSpec, kinds: Mapping[str, BackendKind]
    ) -> AbstractAsyncContextManager[Mapping[str, Backend]]:
        """Backend name → an opened backend, for the batch's whole run."""
        ...


class LocalEngine:
    """Every attempt runs in this process, on the runner's trio loop."""

    @asynccontextmanager
    async def open_backends(
        self, spec: BatchSpec, kinds: Mapping[str, BackendKind]
    ) -> AsyncIterator[Mapping[str, Backend]]:
        async with AsyncExitStack() as stack:
            backends: dict[str, Backend] = {}
            for name, kind in kinds.items():
                settings = spec.backends.get(name) or kind.Settings()
                backends[name] = await stack.enter_async_context(kind.open(settings, seed=spec.seed))
            yield backends


def engine_named(name: str, address: str | None = None) -> Engine:
    """The engine ``name`` (one of :data:`ENGINES`); ``address`` is the Ray cluster to join
    (None: start a local Ray instance for the run). Raises ConfigError for a bad name or address."""
    from orchestrator.errors import ConfigError

    if name == "local":
        if address is not None:
            raise ConfigError(["--address: only with --engine ray"])
        return LocalEngine()
    if name == "ray":
        from orchestrator.engines.ray import RayEngine

        return RayEngine(address)
    raise ConfigError([f"engine {name!r}: unknown; one of {', '.join(ENGINES)}"])
