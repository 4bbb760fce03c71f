"""The contract between the runner and a backend.

A backend streams one attempt of one job (``stream(job, attempt, emit)``) by calling
``await emit(event)`` for every stream event, in order, and returns once it has emitted
:class:`~orchestrator.events.StreamFinished`. It ends a failed attempt by raising
:class:`~orchestrator.errors.RetryableError` or :class:`~orchestrator.errors.FatalError`.

Why a callback rather than an async iterator: the backend keeps ownership of its own nurseries
and cancel scopes (an async generator must not yield from inside those under trio), and ``emit``
is where backpressure, tagging and the idle watchdog live, so a backend cannot get them wrong.

A backend that hears from its server between events (keep-alive comments, pings) says so with
:func:`orchestrator.run.watchdog.signs_of_life`; one that times the wait for its first event
itself calls :func:`~orchestrator.run.watchdog.wait_for_first_event`, so idle counts only after it.

``emit`` must not be called from two tasks at once: a backend that reads several streams
funnels their events through one task, so per-job sequence numbers stay in order.

Cancellation: the runner cancels an attempt (timeout, Ctrl-C, deadline) by cancelling the scope
``stream`` runs in. ``stream`` must then release everything it holds (close its connection, end
its process) before the ``Cancelled`` exception leaves it, and emit nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from orchestrator.events import Event, StreamEvent
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec

Emit = Callable[[StreamEvent], Awaitable[None]]
EmitBatch = Callable[[Event], Awaitable[None]]
"""How a backend sends a batch-level event (``job`` null), such as ``batch_submitted``."""


class Backend(Protocol):
    """An opened backend, shared by every job of the batch that names it.

    Optional members the runner uses when present: ``estimate(job) -> (tokens, cost or None)``,
    at most what one attempt may use (for pacing and the spend cap), and
    ``refunds_unused_tokens: bool`` (default True), whether the server's token rate limit gives
    back what an attempt reserved and did not use; ``waits_for_results: bool`` (default False),
    whether an attempt waits in silence for a result computed elsewhere (a provider's batch API),
    so ``timeouts.idle`` and ``timeouts.attempt`` do not apply to it (``timeouts.job`` does);
    ``attach(emit_batch, log, within_cap)``, called once before any attempt, with the function
    that sends batch-level events (returning once the log has a durable one, see
    ``orchestrator.events.DURABLE_EVENTS``), the path of the run's log (None without one), which the batch
    APIs read to re-attach to the remote batches an earlier run left running, and
    ``within_cap(more_usd)``, whether the spend cap has room for what is spent, reserved and
    ``more_usd``; ``async stop_remote(cancel)``, awaited when the run stops (before its jobs
    end), to leave or cancel what runs remotely (``cancel`` None: the backend's setting decides).
    """

    async def stream(self, job: JobSpec, attempt: int, emit: Emit) -> None:
        """Stream attempt number ``attempt`` (from 1) of ``job``; see the module docstring."""
        ...


class BackendKind(Protocol):
    """What the registry knows about a backend before any of it runs.

    ``Options`` (per job) and ``Settings`` (per batch) are attrs classes whose fields all have
    defaults; job files fill them from ``[defaults.NAME]``/``[[jobs]] NAME = {...}`` and
    ``[backends.NAME]``. ``default_concurrency`` caps this backend's in-flight attempts unless
    the settings say otherwise (None: only the global limit applies).

    Optional: ``secrets(settings) -> list[str]``, the secret values the backend will use (its
    API key). The runner hides them, with the environment's secrets, in every event and error
    the backend sends (see :mod:`orchestrator.redact`).
    """

    name: str
    Options: type
    Settings: type
    default_concurrency: int | None

    def preflight(self, settings: Any, jobs: Sequence[Alike]) -> list[str]:
        """Problems that make the batch impossible (missing CLI, missing API key), one per line.

        ``jobs``: the backend's jobs in groups of jobs alike (see :class:`~orchestrator.jobs.Alike`):
        a check of settings looks at each group's ``job`` once and counts its ``ids``; the
        request text of a group of many is not checked here (the loader checked it).

        Runs before anything starts; a non-empty answer ends the run with exit code 2.
        """
        ...

    def open(self, settings: Any, *, seed: int) -> AbstractAsyncContextManager[Backend]:
        """Open the backend for one batch (connection pools, a loaded model) and close it after."""
        ...
