"""``anthropic-batch``: the Anthropic Message Batches API, at half the streaming price.

The same jobs, options, key and settings as ``anthropic`` (the request body is that backend's,
without ``stream``), plus the batch settings below. Wire format:

- create: ``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}``; at most
  100,000 requests and 256 MB a batch;
- find (after a create call in doubt): ``GET /v1/messages/batches`` (newest first, ``limit``,
  ``after_id``); a message batch carries no metadata, so it is matched by its creation time and
  request count (see :meth:`MessageBatches.find`);
- cancel: ``POST /v1/messages/batches/{id}/cancel``: ``canceling``, then ``ended`` with the
  requests it finished and the others ``canceled``;
- poll: ``GET /v1/messages/batches/{id}``: ``processing_status`` (``in_progress``,
  ``canceling``, ``ended``) and ``request_counts`` (``processing``, ``succeeded``, ``errored``,
  ``canceled``, ``expired``);
- results: ``GET /v1/messages/batches/{id}/results``, JSONL of ``{"custom_id", "result": {"type":
  "succeeded", "message"} | {"type": "errored", "error"} | {"type": "expired"} | {"type":
  "canceled"}}``. The documented path is used rather than the ``results_url`` the batch names, so
  the key goes nowhere but ``base_url``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs
import orjson

from orchestrator.backends.fields import str_or_none
from orchestrator.backends.http import anthropic
from orchestrator.backends.http.batch.create import create, created_at, listed
from orchestrator.backends.http.batch.provider import Outcome, Progress
from orchestrator.backends.http.batch.remote import (
    BatchApi,
    BatchKind,
    BatchSettings,
    Control,
    error_in_result,
    not_run,
    remote_id,
)
from orchestrator.backends.http.batch.replay import anthropic_events
from orchestrator.backends.http.prices import BATCH_PRICE
from orchestrator.backends.http.status import message_of

NAME = "anthropic-batch"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1000 * 1000


@attrs.frozen
class Settings(anthropic.Settings, BatchSettings):
    """Batch-wide ``[backends.anthropic-batch]`` settings: ``anthropic``'s and the batch settings (the API
    takes 100,000 requests and 256 MB a batch)."""


class MessageBatches:
    """The remote batches of one opened backend."""

    def __init__(self, control: Control, settings: Settings, redact: Callable[[str], str]) -> None:
        self.control = control
        self.url = settings.base_url.rstrip("/") + "/v1/messages/batches"
        self.redact = redact

    def size(self, custom_id: str, body: Mapping[str, Any]) -> int:
        return len(orjson.dumps({"custom_id": custom_id, "params": body})) + 1

    async def submit(self, requests: Sequence[tuple[str, Mapping[str, Any]]], label: str) -> str:
        payload = {"requests": [{"custom_id": cid, "params": body} for cid, body in requests]}
        return await create(self.control, self.url, orjson.dumps(payload))

    async def find(self, label: str, count: int, since: float, known: Collection[str]) -> str | None:
        """A message batch has no metadata: the one created since ``since`` (with the clock
        slack) holding ``count`` requests that this run does not know already. Should another
        client have made one just like it, its results name other ``custom_id`` values, and
        this chunk's requests, missing from them, are sent again."""
        found: list[tuple[float, str]] = []
        for batch in await listed(self.control, self.url, "after_id", since):
            counts = batch.get("request_counts")
            total = sum(v for v in counts.values() if isinstance(v, int)) if isinstance(counts, dict) else -1
            created = created_at(batch.get("created_at"))
            batch_id = batch.get("id")
            if total == count and created is not None and isinstance(batch_id, str) and batch_id not in known:
                found.append((abs(created - since), remote_id(batch)))
        return min(found)[1] if found else None

    async def cancel(self, batch_id: str) -> None:
        await self.control.call("POST", f"{self.url}/{batch_id}/cancel")

    async def poll(self, batch_id: str) -> Progress:
        answer = await self.control.call("GET", f"{self.url}/{batch_id}")
        counts = answer.get("request_counts") if isinstance(answer, dict) else None
        counts = {k: v for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}
        return Progress(
            ended=isinstance(answer, dict) and answer.get("processing_status") == "ended", counts=counts
        )

    async def results(self, batch_id: str) -> list[Outcome]:
        outcomes: list[Outcome] = []
        await self.control.each_line(
            f"{self.url}/{batch_id}/results", lambda line: outcomes.append(self._outcome(line))
        )
        return [outcome for outcome in outcomes if outcome.custom_id]

    def _outcome(self, line: bytes) -> Outcome:
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            return Outcome("")
        if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
            return Outcome("")
        cid = str_or_none(data.get("custom_id")) or ""
        result = data["result"]
        match result.get("type"):
            case "succeeded":
                return Outcome(cid, reply=result.get("message"))
            case "errored":
                message, kind = message_of(result.get("error"))
                return Outcome(cid, error=error_in_result(message, kind, None, self.redact))
            case "expired":
                return Outcome(cid, error=not_run("expired"))
            case other:
                return Outcome(cid, error=not_run(str_or_none(other) or "canceled"))


KIND = BatchKind(
    BatchApi(
        name=NAME,
        streaming=attrs.evolve(anthropic.KIND.api, price_scale=BATCH_PRICE),
        settings=Settings,
        remote=MessageBatches,
        events=anthropic_events,
        max_requests=MAX_REQUESTS,
        max_bytes=MAX_BYTES,
    )
)
