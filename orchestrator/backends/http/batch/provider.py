"""What the :class:`~.collector.Collector` needs of a provider's batch endpoints, and the
values that pass between them: a request's :class:`Outcome`, a poll's :class:`Progress`, a
create call in doubt, and a create call an earlier run stopped during (:class:`LostCreate`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import attrs

from orchestrator.errors import BackendError, RetryableError


@attrs.frozen
class Outcome:
    """What a batch said about one request: ``reply`` (the complete body) when it succeeded, else
    the ``error`` its attempt raises."""

    custom_id: str
    reply: Any = None
    error: BackendError | None = None


@attrs.frozen
class Progress:
    """One poll's answer: whether the batch has ended, its counts by state (the provider's names),
    and how long the server asks to wait before the next poll."""

    ended: bool
    counts: Mapping[str, int] = attrs.field(factory=dict)
    retry_after: float | None = None


class CreateInDoubt(RetryableError):
    """The create call failed in a way that leaves the batch possibly made (the request may
    have reached the provider): look for it before sending its requests again."""


class RemoteBatches(Protocol):
    """One provider's batch endpoints. Every method raises RetryableError or FatalError."""

    def size(self, custom_id: str, body: Mapping[str, Any]) -> int:
        """The bytes this request adds to a batch."""
        ...

    async def submit(self, requests: Sequence[tuple[str, Mapping[str, Any]]], label: str) -> str:
        """Create a batch of ``(custom_id, body)``; its id. ``label`` is unique to this chunk (for
        :meth:`find`). Raises :class:`CreateInDoubt` when the batch may exist all the same."""
        ...

    async def find(self, label: str, count: int, since: float, known: Collection[str]) -> str | None:
        """The id of the batch :meth:`submit` made for ``label`` (``count`` requests, created
        after ``since``, wall-clock seconds, and not one of ``known``), or None: there is none."""
        ...

    async def poll(self, batch_id: str) -> Progress: ...

    async def results(self, batch_id: str) -> list[Outcome]: ...

    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch (it ends soon after, with what it finished)."""
        ...


@attrs.frozen
class LostCreate:
    """A create call an earlier run sent and never logged an answer to: the chunk's ``label``,
    when (``at``, wall-clock seconds), how many requests it held (``count``), and the requests
    still waiting for a result (``custom_id``: content hash, as for :meth:`Collector.adopt`)."""

    label: str
    at: float
    count: int
    requests: Mapping[str, str | None]
