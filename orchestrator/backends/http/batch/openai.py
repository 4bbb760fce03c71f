"""``openai-batch``: the OpenAI Batch API for chat completions, at half the streaming price.

The same jobs, options, key and settings as ``openai`` (the request body is that backend's,
without ``stream``), plus the batch settings below. Wire format (paths after ``base_url``):

- upload: ``POST /files`` (multipart: ``purpose=batch`` and a JSONL ``file`` of ``{"custom_id",
  "method": "POST", "url": "/v1/chat/completions", "body"}``); at most 50,000 requests and
  200 MB a file;
- create: ``POST /batches`` with ``input_file_id``, ``endpoint``, ``completion_window: 24h`` and
  ``metadata`` naming the chunk (``orchestrator_chunk``);
- find (after a create call in doubt): ``GET /batches`` (newest first, ``limit``, ``after``),
  the batch whose metadata names the chunk;
- cancel: ``POST /batches/{id}/cancel``: ``cancelling``, then ``cancelled`` with the finished
  requests in its output file;
- poll: ``GET /batches/{id}``: ``status`` (``validating``, ``in_progress``, ``finalizing``, then
  ``completed``, ``failed``, ``expired``, ``cancelled``), ``request_counts`` (``total``,
  ``completed``, ``failed``), ``output_file_id``, ``error_file_id``;
- results: ``GET /files/{id}/content`` of both files, JSONL of ``{"custom_id", "response":
  {"status_code", "body"}, "error"}``; a request the batch did not run before it expired has the
  error code ``batch_expired``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs
import orjson

from orchestrator.backends.fields import dict_or_empty, int_or_none
from orchestrator.backends.http import openai
from orchestrator.backends.http.batch.create import create, listed
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
from orchestrator.backends.http.batch.replay import openai_events
from orchestrator.backends.http.prices import BATCH_PRICE
from orchestrator.backends.http.status import message_of
from orchestrator.errors import ErrorKind, RetryableError

NAME = "openai-batch"
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1000 * 1000
ENDPOINT = "/v1/chat/completions"
_ENDED = ("completed", "failed", "expired", "cancelled")
CHUNK_KEY = "orchestrator_chunk"
"""The batch ``metadata`` key holding the chunk's label, by which a batch whose create call was
in doubt is found again."""


@attrs.frozen
class Settings(openai.Settings, BatchSettings):
    """Batch-wide ``[backends.openai-batch]`` settings: ``openai``'s and the batch settings (the API
    takes 50,000 requests and 200 MB a batch)."""


class ChatBatches:
    """The remote batches of one opened backend."""

    def __init__(self, control: Control, settings: Settings, redact: Callable[[str], str]) -> None:
        self.control = control
        self.base = settings.base_url.rstrip("/")
        self.redact = redact
        self.files: dict[str, tuple[str | None, str | None]] = {}

    def size(self, custom_id: str, body: Mapping[str, Any]) -> int:
        return len(_line(custom_id, body)) + 1

    async def submit(self, requests: Sequence[tuple[str, Mapping[str, Any]]], label: str) -> str:
        jsonl = b"\n".join(_line(cid, body) for cid, body in requests) + b"\n"
        boundary = "batch-" + secrets.token_hex(12)
        form = multipart(boundary, {"purpose": b"batch"}, ("file", "requests.jsonl", jsonl))
        content_type = f"multipart/form-data; boundary={boundary}".encode()
        uploaded = await self.control.call("POST", self.base + "/files", form, content_type=content_type)
        body = {
            "input_file_id": remote_id(uploaded),
            "endpoint": ENDPOINT,
            "completion_window": "24h",
            "metadata": {CHUNK_KEY: label},
        }
        return await create(self.control, self.base + "/batches", orjson.dumps(body))

    async def find(self, label: str, count: int, since: float, known: Collection[str]) -> str | None:
        """The batch whose ``metadata`` carries ``label`` (listed since ``since``)."""
        for batch in await listed(self.control, self.base + "/batches", "after", since):
            if dict_or_empty(batch.get("metadata")).get(CHUNK_KEY) == label:
                return remote_id(batch)
        return None

    async def cancel(self, batch_id: str) -> None:
        await self.control.call("POST", f"{self.base}/batches/{batch_id}/cancel")

    async def poll(self, batch_id: str) -> Progress:
        answer = await self.control.call("GET", f"{self.base}/batches/{batch_id}")
        if not isinstance(answer, dict):
            raise RetryableError("the batch API answered a poll with no batch", kind=ErrorKind.PROTOCOL)
        counts = answer.get("request_counts")
        counts = {k: v for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}
        status = answer.get("status")
        counts["processing"] = max(
            0, counts.get("total", 0) - counts.get("completed", 0) - counts.get("failed", 0)
        )
        self.files[batch_id] = (_file_id(answer.get("output_file_id")), _file_id(answer.get("error_file_id")))
        return Progress(ended=status in _ENDED, counts=counts)

    async def results(self, batch_id: str) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for file_id in self.files.get(batch_id, (None, None)):
            if file_id is not None:
                url = f"{self.base}/files/{file_id}/content"
                await self.control.each_line(url, lambda line: outcomes.append(self._outcome(line)))
        return [outcome for outcome in outcomes if outcome.custom_id]

    def _outcome(self, line: bytes) -> Outcome:
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            return Outcome("")
        if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
            return Outcome("")
        cid: str = data["custom_id"]
        response = dict_or_empty(data.get("response"))
        status = int_or_none(response.get("status_code"))
        error = data.get("error")
        if status == 200 and not error:
            return Outcome(cid, reply=response.get("body"))
        code = dict_or_empty(error).get("code")
        if code in ("batch_expired", "batch_cancelled"):
            return Outcome(cid, error=not_run("expired" if code == "batch_expired" else "cancelled"))
        body = response.get("body")
        message, kind = message_of(body if body is not None else {"error": error})
        return Outcome(cid, error=error_in_result(message, kind, status, self.redact))


def _line(custom_id: str, body: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body})


def _file_id(value: Any) -> str | None:
    return remote_id({"id": value}) if isinstance(value, str) and value else None


def multipart(boundary: str, fields: Mapping[str, bytes], file: tuple[str, str, bytes]) -> bytes:
    """A ``multipart/form-data`` body: the plain ``fields``, then one file ``(field, name, data)``."""
    parts = [
        f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in fields.items()
    ]
    field, filename, data = file
    head = (
        f'--{boundary}\r\ncontent-disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "content-type: application/jsonl\r\n\r\n"
    )
    parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


KIND = BatchKind(
    BatchApi(
        name=NAME,
        streaming=attrs.evolve(openai.KIND.api, price_scale=BATCH_PRICE),
        settings=Settings,
        remote=ChatBatches,
        events=openai_events,
        max_requests=MAX_REQUESTS,
        max_bytes=MAX_BYTES,
    )
)
