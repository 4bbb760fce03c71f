"""A fake OpenAI Batch API (chat completions) on 127.0.0.1, for tests and demos.

Routes (the real wire format, under ``/v1``): ``POST /v1/files`` (multipart, ``purpose=batch``,
a JSONL ``file`` of ``{"custom_id", "method", "url", "body"}``, at most 50,000 lines),
``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``), ``GET
/v1/batches/{id}`` (``status``, ``request_counts``, ``output_file_id``, ``error_file_id``), ``GET
/v1/files/{id}/content``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/batches`` (newest first,
``limit`` and ``after``); a create's ``metadata`` is kept and listed. Replies are the streaming fake's
:class:`Reply` values as complete ``chat.completion`` bodies, so a batch answers what the
streaming fake would. Failed requests go to the error file, expired ones with the code
``batch_expired``. State and restarts: see :mod:`orchestrator.testing.remote_batches`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio

from orchestrator.testing.anthropic.wire import json_response, response_head
from orchestrator.testing.openai.script import Reply
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
    "completion",
    "open_fake_openai_batches",
    "openai_batch_store",
]

MAX_REQUESTS = 50_000
_BOUNDARY = re.compile(rb"boundary=\"?([^\";]+)")


def echo(body: Any) -> Reply:
    """The default answer: the last message's text, echoed."""
    messages = body.get("messages") if isinstance(body, dict) else None
    last = (
        messages[-1].get("content")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict)
        else ""
    )
    return Reply(text=f"Echo: {last if isinstance(last, str) else '...'}")


def openai_batch_store(processing: float = 1.0) -> BatchStore:
    """A new fake's state: batches end ``processing`` seconds after creation."""
    return BatchStore(echo, processing)


def completion(reply: Reply, model: str) -> dict[str, Any]:
    """The ``chat.completion`` body of ``reply``, with the usage its stream would report."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": tool.id or f"call_fake_{index}",
                "type": "function",
                "function": {"name": tool.name, "arguments": orjson.dumps(dict(tool.arguments)).decode()},
            }
            for index, tool in enumerate(reply.tool_calls)
        ]
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if reply.usage:
        completion_tokens = reply.tokens() - reply.prompt_tokens
        body["usage"] = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": reply.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        }
    return body


@asynccontextmanager
async def open_fake_openai_batches(
    store: BatchStore | None = None, *, port: int = 0
) -> AsyncIterator[FakeBatches]:
    """Serve the fake for the block (a new store unless given one to carry on with); its
    ``base_url`` has ``/v1``, as the real API's has."""
    state = store if store is not None else openai_batch_store()
    async with open_fake_batches(_route, state, port, "/v1") as fake:
        yield fake


def _route(store: BatchStore) -> Route:
    def route(
        method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], raw: bytes
    ) -> bytes:
        return _answer(store, method, path, query, headers, raw)

    return route


def _error(status: int, message: str) -> bytes:
    return json_response(
        status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    )


def _answer(
    store: BatchStore,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    raw: bytes,
) -> bytes:
    parts = path.removeprefix("/v1/").split("/")
    now = trio.current_time()
    if method == "POST" and parts == ["files"]:
        data = _uploaded_file(headers.get("content-type", ""), raw)
        if data is None:
            return _error(400, "fake: expected multipart form data with purpose=batch and a file")
        file_id = store.new_id("file-fake")
        store.files[file_id] = data
        return json_response(200, {"id": file_id, "object": "file", "purpose": "batch", "bytes": len(data)})
    if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
        content = store.files.get(parts[1])
        if content is None:
            return _error(404, f"fake: no file {parts[1]}")
        return (
            response_head(
                200, {"content-type": "application/octet-stream", "content-length": str(len(content))}
            )
            + content
        )
    if method == "POST" and parts == ["batches"]:
        return _create(store, raw)
    if method == "GET" and parts == ["batches"]:
        return _list(store, query)
    batch = store.batches.get(parts[1]) if len(parts) >= 2 and parts[0] == "batches" else None
    if batch is None:
        return _error(404, f"fake: no route for {method} {path}")
    if method == "GET" and len(parts) == 2:
        return json_response(200, _batch(store, batch, now))
    if method == "POST" and parts[2:] == ["cancel"]:
        if not store.cancel(batch):
            return _error(400, f"fake: batch {batch.id} has ended and cannot be cancelled")
        return json_response(200, _batch(store, batch, now))
    return _error(404, f"fake: no route for {method} {path}")


def _uploaded_file(content_type: str, raw: bytes) -> bytes | None:
    found = _BOUNDARY.search(content_type.encode())
    if found is None:
        return None
    fields: dict[bytes, bytes] = {}
    for part in raw.split(b"--" + found.group(1))[1:-1]:
        head, _, value = part.strip(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name is not None:
            fields[name.group(1)] = value
    if fields.get(b"purpose") != b"batch" or b"file" not in fields:
        return None
    return fields[b"file"]


def _create(store: BatchStore, raw: bytes) -> bytes:
    try:
        payload = orjson.loads(raw)
        content = store.files[payload["input_file_id"]]
        lines = [orjson.loads(line) for line in content.splitlines() if line.strip()]
        requests = [(line["custom_id"], line["body"]) for line in lines]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _error(
            400, "fake: input_file_id must name an uploaded JSONL of {custom_id, method, url, body}"
        )
    if payload.get("endpoint") != "/v1/chat/completions" or payload.get("completion_window") != "24h":
        return _error(400, "fake: endpoint must be /v1/chat/completions and completion_window 24h")
    if not 1 <= len(requests) <= MAX_REQUESTS or any(
        line.get("url") != "/v1/chat/completions" for line in lines
    ):
        return _error(400, f"fake: between 1 and {MAX_REQUESTS} requests, each to /v1/chat/completions")
    metadata = payload.get("metadata") or {}
    if (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in metadata.items()
        )
    ):
        return _error(400, "fake: metadata: at most 16 string pairs (keys 64, values 512 characters)")
    batch = store.create("batch_fake", requests, metadata)
    store.after_create()
    return json_response(200, _batch(store, batch, trio.current_time()))


def _list(store: BatchStore, query: Mapping[str, str]) -> bytes:
    """``GET /v1/batches``: newest first, ``limit`` (1 to 100, default 20) a page, ``after``
    continuing after a batch."""
    try:
        limit = max(1, min(100, int(query.get("limit", "20"))))
    except ValueError:
        return _error(400, "fake: limit: expected an integer")
    batches = store.newest_first()
    after = query.get("after")
    if after is not None:
        ids = [batch.id for batch in batches]
        batches = batches[ids.index(after) + 1 :] if after in ids else []
    page = batches[:limit]
    now = trio.current_time()
    return json_response(
        200,
        {
            "object": "list",
            "data": [_batch(store, batch, now) for batch in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(batches) > limit,
        },
    )


def _batch(store: BatchStore, batch: RemoteBatch, now: float) -> dict[str, Any]:
    total = len(batch.requests)
    answer: dict[str, Any] = {
        "id": batch.id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "created_at": int(batch.created_at),
        "metadata": batch.metadata or None,
    }
    if not batch.ended(now):
        done = [
            outcome
            for index, (_, _, outcome) in enumerate(batch.requests)
            if now >= batch.finished(index) and not batch.canceled(index)
        ]
        failed = sum(1 for outcome in done if isinstance(outcome, Errored))
        return {
            **answer,
            "status": "cancelling" if batch.cancelling_now(now) else "in_progress",
            "request_counts": {"total": total, "completed": len(done) - failed, "failed": failed},
        }
    if not batch.files:
        _write_results(store, batch)
    failed = sum(
        1
        for index, (_, _, outcome) in enumerate(batch.requests)
        if isinstance(outcome, Errored | Expired) or batch.canceled(index)
    )
    status = (
        "cancelled"
        if batch.cancel_at is not None
        else "expired"
        if any(isinstance(o, Expired) for _, _, o in batch.requests)
        else "completed"
    )
    return {
        **answer,
        "status": status,
        "request_counts": {"total": total, "completed": total - failed, "failed": failed},
        "output_file_id": batch.files.get("output"),
        "error_file_id": batch.files.get("error"),
    }


def _write_results(store: BatchStore, batch: RemoteBatch) -> None:
    output, errors = [], []
    for index, (custom_id, body, outcome) in enumerate(batch.requests):
        line: dict[str, Any] = {"id": store.new_id("batch_req_"), "custom_id": custom_id, "error": None}
        if batch.canceled(index) or isinstance(outcome, Expired):
            code = "batch_cancelled" if batch.canceled(index) else "batch_expired"
            errors.append(
                {
                    **line,
                    "response": None,
                    "error": {
                        "code": code,
                        "message": "This request could not be executed before the batch ended.",
                    },
                }
            )
        elif isinstance(outcome, Errored):
            error = {"message": outcome.message, "type": outcome.error_type, "param": None, "code": None}
            errors.append({**line, "response": {"status_code": outcome.status, "body": {"error": error}}})
        else:
            model = requested_model(body, "gpt-fake")
            response = {
                "status_code": 200,
                "request_id": store.new_id("req_"),
                "body": completion(outcome, outcome.model or model),
            }
            output.append({**line, "response": response})
    for name, lines in (("output", output), ("error", errors)):
        if lines:
            file_id = store.new_id("file-fake")
            store.files[file_id] = b"".join(orjson.dumps(line) + b"\n" for line in lines)
            batch.files[name] = file_id


def main() -> None:
    """``python -m orchestrator.testing.openai.batches``: serve the fake until Ctrl-C."""
    serve_until_interrupted(
        "openai", lambda store, port: open_fake_openai_batches(store, port=port), openai_batch_store
    )


if __name__ == "__main__":
    main()
