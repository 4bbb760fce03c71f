"""A fake Anthropic Message Batches API on 127.0.0.1, for tests and demos.

Routes (the real wire format): ``POST /v1/messages/batches`` (``{"requests": [{"custom_id",
"params"}]}``, at most 100,000, ids of 1 to 64 letters, digits, ``_`` or ``-``, unique),
``GET /v1/messages/batches/{id}`` (``processing_status``, ``request_counts``, ``results_url``),
``GET /v1/messages/batches/{id}/results`` (JSONL, once ended), ``POST
/v1/messages/batches/{id}/cancel``, ``GET /v1/messages/batches`` (newest first, ``limit`` and
``after_id``). Replies are the streaming fake's :class:`Reply` values, as
complete ``Message`` objects, so a batch answers what the streaming fake would.

Use it inside a trio test; a restart keeps the state::

    store = anthropic_batch_store(processing=30)
    async with open_fake_anthropic_batches(store) as fake:
        store.script("job-1", Errored(529, "overloaded_error"), Reply.text("ok"))
        ...
    async with open_fake_anthropic_batches(store, port=fake.port):
        ...   # the same batches, still processing
    assert store.submissions["job-1"] == 2
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import trio

from orchestrator.testing.anthropic import wire
from orchestrator.testing.anthropic.script import HttpError, Reply, Text
from orchestrator.testing.remote_batches import (
    BatchStore,
    Errored,
    Expired,
    FakeBatches,
    RemoteBatch,
    Route,
    open_fake_batches,
    requested_model,
    serve_until_interrupted,
)

__all__ = [
    "BatchStore",
    "Errored",
    "Expired",
    "FakeBatches",
    "anthropic_batch_store",
    "open_fake_anthropic_batches",
]

MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX = "/v1/messages/batches"


def echo(params: Any) -> Reply:
    """The default answer: the last user message's text, echoed."""
    messages = params.get("messages") if isinstance(params, dict) else None
    last = (
        messages[-1].get("content")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict)
        else ""
    )
    return Reply((Text(f"Echo: {last if isinstance(last, str) else '...'}"),))


def anthropic_batch_store(processing: float = 1.0) -> BatchStore:
    """A new fake's state: batches end ``processing`` seconds after creation."""
    return BatchStore(echo, processing)


@asynccontextmanager
async def open_fake_anthropic_batches(
    store: BatchStore | None = None, *, port: int = 0
) -> AsyncIterator[FakeBatches]:
    """Serve the fake for the block (a new store unless given one to carry on with)."""
    state = store if store is not None else anthropic_batch_store()
    async with open_fake_batches(_route, state, port) as fake:
        yield fake


def _route(store: BatchStore) -> Route:
    def route(
        method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], raw: bytes
    ) -> bytes:
        return _answer(store, method, path, query, raw)

    return route


def _answer(store: BatchStore, method: str, path: str, query: Mapping[str, str], raw: bytes) -> bytes:
    if method == "POST" and path == _PREFIX:
        return _create(store, raw)
    if method == "GET" and path == _PREFIX:
        return _list(store, query)
    rest = path.removeprefix(_PREFIX + "/").split("/")
    batch = store.batches.get(rest[0]) if path.startswith(_PREFIX + "/") else None
    if batch is None:
        return wire.error_response(HttpError(404, f"fake: no route for {method} {path}"))
    now = trio.current_time()
    if method == "GET" and len(rest) == 1:
        return wire.json_response(200, _batch(batch, now))
    if method == "GET" and rest[1:] == ["results"]:
        if not batch.ended(now):
            return wire.error_response(HttpError(400, "fake: the batch has not ended"))
        lines = b"".join(
            orjson.dumps(_result(batch, index, now)) + b"\n" for index in range(len(batch.requests))
        )
        head = wire.response_head(
            200, {"content-type": "application/binary", "content-length": str(len(lines))}
        )
        return head + lines
    if method == "POST" and rest[1:] == ["cancel"]:
        if not store.cancel(batch):
            return wire.error_response(HttpError(400, f"fake: batch {batch.id} has ended"))
        return wire.json_response(200, _batch(batch, now))
    return wire.error_response(HttpError(404, f"fake: no route for {method} {path}"))


def _list(store: BatchStore, query: Mapping[str, str]) -> bytes:
    """``GET /v1/messages/batches``: newest first, ``limit`` (1 to 1000, default 20) a page,
    ``after_id`` continuing after a batch."""
    try:
        limit = max(1, min(1000, int(query.get("limit", "20"))))
    except ValueError:
        return wire.error_response(HttpError(400, "limit: expected an integer"))
    batches = store.newest_first()
    after = query.get("after_id")
    if after is not None:
        ids = [batch.id for batch in batches]
        batches = batches[ids.index(after) + 1 :] if after in ids else []
    page = batches[:limit]
    now = trio.current_time()
    return wire.json_response(
        200,
        {
            "data": [_batch(batch, now) for batch in page],
            "has_more": len(batches) > limit,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        },
    )


def _create(store: BatchStore, raw: bytes) -> bytes:
    try:
        payload = orjson.loads(raw)
        requests = [(r["custom_id"], r["params"]) for r in payload["requests"]]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return wire.error_response(HttpError(400, "requests: expected a list of {custom_id, params}"))
    ids = [cid for cid, _ in requests]
    if not 1 <= len(requests) <= MAX_REQUESTS:
        return wire.error_response(HttpError(400, f"requests: between 1 and {MAX_REQUESTS} items"))
    if not all(isinstance(cid, str) and _CUSTOM_ID.fullmatch(cid) for cid in ids) or len(set(ids)) < len(ids):
        return wire.error_response(
            HttpError(400, "custom_id: must be unique and match ^[a-zA-Z0-9_-]{1,64}$")
        )
    batch = store.create("msgbatch_fake_", requests)
    store.after_create()
    return wire.json_response(200, _batch(batch, trio.current_time()))


def _state(batch: RemoteBatch, index: int, now: float) -> str:
    """The request's state as of ``now``: ``processing`` until it finished or its batch ended."""
    if batch.canceled(index):
        return "canceled" if batch.ended(now) else "processing"
    if now < batch.finished(index):
        return "processing"
    outcome = batch.requests[index][2]
    if isinstance(outcome, Errored):
        return "errored"
    if isinstance(outcome, Expired):
        return "expired" if batch.ended(now) else "processing"
    return "succeeded"


def _batch(batch: RemoteBatch, now: float) -> dict[str, Any]:
    ended = batch.ended(now)
    counts = Counter({"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0})
    for index in range(len(batch.requests)):
        counts[_state(batch, index, now)] += 1
    status = "ended" if ended else "canceling" if batch.cancelling_now(now) else "in_progress"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": dict(counts),
        "created_at": _rfc3339(batch.created_at),
        "cancel_initiated_at": (
            None if batch.cancel_at is None else _rfc3339(batch.created_at + batch.cancel_at - batch.created)
        ),
        "results_url": f"{_PREFIX}/{batch.id}/results" if ended else None,
    }


def _rfc3339(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _result(batch: RemoteBatch, index: int, now: float) -> dict[str, Any]:
    custom_id, params, outcome = batch.requests[index]
    state = _state(batch, index, now)
    if state == "succeeded":
        model = requested_model(params, "claude-fake")
        return {
            "custom_id": custom_id,
            "result": {"type": "succeeded", "message": wire.message(outcome, outcome.model or model)},
        }
    if state == "errored":
        error = {"type": outcome.error_type, "message": outcome.message}
        return {
            "custom_id": custom_id,
            "result": {"type": "errored", "error": {"type": "error", "error": error}},
        }
    return {"custom_id": custom_id, "result": {"type": state}}


def main() -> None:
    """``python -m orchestrator.testing.anthropic.batches``: serve the fake until Ctrl-C."""
    serve_until_interrupted(
        "anthropic", lambda store, port: open_fake_anthropic_batches(store, port=port), anthropic_batch_store
    )


if __name__ == "__main__":
    main()
