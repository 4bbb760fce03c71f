"""A fake Anthropic Message Batches API on 127.0.0.1, for tests and demos.

Routes (the real wire format): ``POST /v1/messages/batches`` (``{"requests": [{"custom_id",
"params"}]}``, at most 100,000, ids of 1 to 64 letters, digits, ``_`` or ``-``, unique),
``GET /v1/messages/batches/{id}`` (``processing_status``, ``request_counts``, ``results_url``),
``GET /v1/messages/batches/{id}/results`` (JSONL, once ended), ``POST
/v1/messages/batches/{id}/cancel``. Replies are the streaming fake's :class:`Reply` values, as
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
from typing import Any

import attrs
import orjson
import trio

from orchestrator.testing.anthropic import wire
from orchestrator.testing.anthropic.script import HttpError, Reply, Text
from orchestrator.testing.remote_batches import (
    BatchStore,
    Errored,
    Expired,
    RemoteBatch,
    requested_model,
    serve,
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


@attrs.frozen
class FakeBatches:
    store: BatchStore
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def open_fake_anthropic_batches(
    store: BatchStore | None = None, *, port: int = 0
) -> AsyncIterator[FakeBatches]:
    """Serve the fake for the block (a new store unless given one to carry on with)."""
    state = store if store is not None else anthropic_batch_store()

    async def route(method: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
        return _answer(state, method, path, body)

    async with serve(route, state, port) as bound:
        yield FakeBatches(state, bound)


def _answer(store: BatchStore, method: str, path: str, raw: bytes) -> bytes:
    if method == "POST" and path == _PREFIX:
        return _create(store, raw)
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
            orjson.dumps(_result(batch, cid, body, outcome)) + b"\n" for cid, body, outcome in batch.requests
        )
        head = wire.response_head(
            200, {"content-type": "application/binary", "content-length": str(len(lines))}
        )
        return head + lines
    if method == "POST" and rest[1:] == ["cancel"]:
        batch.canceled = batch.canceled or not batch.ended(now)
        return wire.json_response(200, _batch(batch, now))
    return wire.error_response(HttpError(404, f"fake: no route for {method} {path}"))


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
    return wire.json_response(200, _batch(batch, trio.current_time()))


def _state(outcome: Any, canceled: bool) -> str:
    if isinstance(outcome, Errored):
        return "errored"
    if isinstance(outcome, Expired):
        return "expired"
    return "canceled" if canceled else "succeeded"


def _batch(batch: RemoteBatch, now: float) -> dict[str, Any]:
    ended = batch.ended(now)
    counts = Counter({"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0})
    for _, _, outcome in batch.requests:
        counts[_state(outcome, batch.canceled) if ended else "processing"] += 1
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": "ended" if ended else "in_progress",
        "request_counts": dict(counts),
        "results_url": f"{_PREFIX}/{batch.id}/results" if ended else None,
    }


def _result(batch: RemoteBatch, custom_id: str, params: Any, outcome: Any) -> dict[str, Any]:
    state = _state(outcome, batch.canceled)
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
