"""Creating a remote batch, and finding it again when the create call was in doubt.

A create call can fail after the provider made the batch (its answer lost to a timeout or a
dropped connection): :func:`create` says so with :class:`~.collector.CreateInDoubt`, and each
provider's ``find`` looks through :func:`listed` batches for the one it made.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orchestrator.backends.http.batch.provider import CreateInDoubt
from orchestrator.backends.http.batch.remote import Control, remote_id
from orchestrator.errors import ErrorKind, RetryableError

_IN_DOUBT = frozenset(
    {ErrorKind.CONNECTION, ErrorKind.TIMEOUT, ErrorKind.SERVER_ERROR, ErrorKind.PROTOCOL, ErrorKind.API_ERROR}
)
"""Failures of a create call that may come after the provider made the batch: the request was
sent and its answer lost or garbled. (A refused connection, a 429 or a 529 made nothing.)"""


async def create(control: Control, url: str, body: bytes) -> str:
    """The answer of a create call; :class:`~.collector.CreateInDoubt` when it failed in a way
    that may leave the batch made (see ``_IN_DOUBT``)."""
    try:
        answer = await control.call("POST", url, body)
        return remote_id(answer)
    except RetryableError as exc:
        if exc.kind in _IN_DOUBT:
            raise CreateInDoubt(str(exc), kind=exc.kind, retry_after=exc.retry_after) from None
        raise


CLOCK_SLACK = 300.0
"""Seconds our clock and the provider's may disagree by, when a batch is looked for by the time
it was created."""


async def listed(control: Control, url: str, cursor: str, since: float) -> list[dict[str, Any]]:
    """The batches a list endpoint gives (newest first, pages of 100, ``cursor`` the query key
    of the next page's start), down to the first created before ``since`` less the clock slack."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query = "?limit=100" + (f"&{cursor}={after}" if after else "")
        page = await control.call("GET", url + query)
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise RetryableError("the batch API answered a list with no data", kind=ErrorKind.PROTOCOL)
        for batch in data:
            if not isinstance(batch, dict):
                continue
            created = created_at(batch.get("created_at"))
            if created is not None and created < since - CLOCK_SLACK:
                return found
            found.append(batch)
        last = page.get("last_id")
        if not page.get("has_more") or not isinstance(last, str) or not data:
            return found
        after = remote_id({"id": last})


def created_at(value: Any) -> float | None:
    """A batch's creation time as the APIs give it (Unix seconds, or RFC 3339 text)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None
